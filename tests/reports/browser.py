"""Headless Debian chromium: render a local page, read back its DOM, its console and a
screenshot. Uses only the command line (no DevTools client library is installed)."""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

import pytest

CHROMIUM_TIMEOUT_SECONDS = 90
INSTALL_HINT = (
    "chromium is not installed; the report's browser test needs Debian's chromium: "
    "run `apt-get update && apt-get install -y chromium` as root (.ci/run does this in CI)"
)
# Chromium logs every console message of the page as `...:CONSOLE:<line>] "<message>", source:`
# (older builds: `CONSOLE(<line>)`); the report runs no script, so any such line is an error.
CONSOLE_LINE = re.compile(r"CONSOLE[:(]")


def chromium_path() -> str:
    for name in ("chromium", "chromium-browser"):
        if path := shutil.which(name):
            return path
    pytest.fail(INSTALL_HINT)


def _run(page: Path, user_data_dir: Path, *mode: str) -> subprocess.CompletedProcess[str]:
    command = [
        chromium_path(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--enable-logging=stderr",
        "--v=0",
        f"--user-data-dir={user_data_dir}",
        *mode,
        page.resolve().as_uri(),
    ]
    return subprocess.run(
        command, capture_output=True, text=True, timeout=CHROMIUM_TIMEOUT_SECONDS, check=False
    )


@dataclass(frozen=True)
class Rendering:
    dom: str
    console_lines: list[str]
    screenshot: Path


def render(page: Path, work_directory: Path) -> Rendering:
    dumped = _run(page, work_directory / "profile-dom", "--dump-dom")
    assert dumped.returncode == 0, dumped.stderr[-2000:]
    screenshot = work_directory / "report.png"
    shot = _run(
        page,
        work_directory / "profile-shot",
        f"--screenshot={screenshot}",
        "--window-size=1280,3000",
        "--hide-scrollbars",
    )
    assert shot.returncode == 0, shot.stderr[-2000:]
    console = [
        line for line in (dumped.stderr + shot.stderr).splitlines() if CONSOLE_LINE.search(line)
    ]
    return Rendering(dumped.stdout, console, screenshot)


class CellReader(HTMLParser):
    """Collects `<td data-table data-row data-column>` texts of a rendered DOM."""

    def __init__(self) -> None:
        super().__init__()
        self.cells: dict[tuple[str, int, str], str] = {}
        self._open: tuple[str, int, str] | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "td" and values.get("data-table") is not None:
            self._open = (
                str(values["data-table"]),
                int(str(values["data-row"])),
                str(values["data-column"]),
            )
            self._text = []

    def handle_data(self, data: str) -> None:
        if self._open is not None:
            self._text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._open is not None:
            self.cells[self._open] = "".join(self._text)
            self._open = None


def table_cells(dom: str) -> dict[tuple[str, int, str], str]:
    reader = CellReader()
    reader.feed(dom)
    return reader.cells
