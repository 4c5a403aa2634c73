"""The outcome of one integrity check, as printed and as recorded."""

from __future__ import annotations

from dataclasses import dataclass

CHECK_STATUSES = ("passed", "failed", "skipped")


@dataclass(frozen=True)
class CheckResult:
    name: str
    description: str
    status: str  # passed, failed or skipped (never counted as passed)
    checked: int
    failed: int
    samples: tuple[str, ...] = ()  # a few broken subjects, to start looking
    note: str = ""

    def __post_init__(self) -> None:
        assert self.status in CHECK_STATUSES, self.status

    def line(self) -> str:
        if self.status == "skipped":
            return f"SKIPPED {self.name}: {self.note}"
        text = f"{self.status.upper():<7} {self.name}: {self.checked} checked, {self.failed} failed"
        if self.samples:
            text += f" (e.g. {', '.join(self.samples)})"
        return text
