"""CPU seconds of processes, from /proc (Linux): the hub's process tree and PostgreSQL's."""

from __future__ import annotations

import os
from pathlib import Path

CLOCK_TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name is in parentheses and may hold spaces: split after its last ")".
    head, _, tail = text.rpartition(")")
    return [head.split(" (", 1)[1], *tail.split()]


def process_cpu_seconds(pid: int, with_reaped_children: bool = False) -> float:
    fields = _stat_fields(pid)
    if fields is None:
        return 0.0
    # fields[0] is comm, then state(1) ppid(2) ... utime(12) stime(13) cutime(14) cstime(15)
    ticks = int(fields[12]) + int(fields[13])
    if with_reaped_children:
        ticks += int(fields[14]) + int(fields[15])
    return ticks / CLOCK_TICKS_PER_SECOND


def _all_pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def process_tree(root_pid: int) -> list[int]:
    parents: dict[int, int] = {}
    for pid in _all_pids():
        fields = _stat_fields(pid)
        if fields is not None:
            parents[pid] = int(fields[2])
    tree = [root_pid]
    for pid in tree:
        tree.extend(child for child, parent in parents.items() if parent == pid)
    return tree


def trees_cpu_seconds(root_pids: list[int]) -> dict[int, float]:
    """CPU seconds of every process in the trees of `root_pids`, by pid."""
    return {pid: process_cpu_seconds(pid) for root in root_pids for pid in process_tree(root)}


def postgres_cpu_seconds() -> float:
    """Every `postgres` process (all databases: other load shows up here too), plus what
    exited backends used (the postmaster's reaped children)."""
    total = 0.0
    for pid in _all_pids():
        fields = _stat_fields(pid)
        if fields is None or fields[0] != "postgres":
            continue
        is_postmaster = int(fields[2]) == 1 or _parent_command(int(fields[2])) != "postgres"
        total += process_cpu_seconds(pid, with_reaped_children=is_postmaster)
    return total


def _parent_command(pid: int) -> str:
    fields = _stat_fields(pid)
    return "" if fields is None else fields[0]


def load_average() -> tuple[float, float, float]:
    return os.getloadavg()
