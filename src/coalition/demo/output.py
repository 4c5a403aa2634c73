"""The demo speaks through standard output, a line at a time, as it goes."""

from __future__ import annotations


def say(line: str) -> None:
    print(line, flush=True)
