"""Progress of a long job: a bar redrawn in place on a terminal, plain log lines otherwise
(cron mail, container logs), both on stderr so that stdout stays the job's result."""

from __future__ import annotations

import time
from typing import TextIO

BAR_WIDTH = 30
# Plain lines at most this often, so a log gets a heartbeat without drowning.
LOG_INTERVAL_SECONDS = 5.0
# A terminal bar is redrawn at most this often.
REDRAW_INTERVAL_SECONDS = 0.1


class Progress:
    def __init__(self, stream: TextIO, job_name: str, bytes_total: int | None) -> None:
        self._stream = stream
        self._job_name = job_name
        self._bytes_total = bytes_total
        self._is_terminal = stream.isatty()
        self._last_output_monotonic = 0.0
        self._phase = ""
        self._bar_open = False

    def __call__(self, phase: str, rows_read: int, bytes_read: int) -> None:
        now = time.monotonic()
        phase_changed = phase != self._phase
        interval = REDRAW_INTERVAL_SECONDS if self._is_terminal else LOG_INTERVAL_SECONDS
        if not phase_changed and now - self._last_output_monotonic < interval:
            return
        self._phase = phase
        self._last_output_monotonic = now
        if self._is_terminal:
            self._draw_bar(phase, rows_read, bytes_read)
        else:
            self._log(f"{phase}: {rows_read} rows read{self._percent_text(bytes_read)}")

    def message(self, text: str) -> None:
        """A line of its own (a finished phase, a check's result)."""
        self._end_bar()
        self._log(text)

    def finish(self) -> None:
        self._end_bar()

    def _draw_bar(self, phase: str, rows_read: int, bytes_read: int) -> None:
        fraction = self._fraction(bytes_read)
        filled = int(BAR_WIDTH * fraction) if fraction is not None else 0
        bar = "#" * filled + "-" * (BAR_WIDTH - filled)
        self._stream.write(
            f"\r{self._job_name} {phase:<9} [{bar}] {rows_read:>12,} rows"
            f"{self._percent_text(bytes_read)}"
        )
        self._stream.flush()
        self._bar_open = True

    def _log(self, text: str) -> None:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        self._stream.write(f"{stamp} {self._job_name} {text}\n")
        self._stream.flush()

    def _end_bar(self) -> None:
        if self._bar_open:
            self._stream.write("\n")
            self._bar_open = False

    def _fraction(self, bytes_read: int) -> float | None:
        if not self._bytes_total:
            return None
        return min(bytes_read / self._bytes_total, 1.0)

    def _percent_text(self, bytes_read: int) -> str:
        fraction = self._fraction(bytes_read)
        return "" if fraction is None else f" ({fraction:.0%})"
