"""`coalition --help` and every command's parser load no heavy dependency: each handler imports
what it uses when it runs (cli.py, `_deferred`)."""

from __future__ import annotations

import json
import resource
import subprocess
import sys

import pytest

from tests.process.commands import COALITION, REPO_ROOT, environment, explain

pytestmark = pytest.mark.process

# What the command line must not load to build its parser or print its help.
HEAVY_PACKAGES = {"sqlalchemy", "grpc", "alembic", "prometheus_client", "google", "cryptography"}
# The target; measured as the child's CPU time (best of a few runs), which other
# engineers' test suites on the same two cores do not inflate as they do wall-clock time.
HELP_CPU_SECONDS_MAX = 0.3
HELP_RUNS = 5

PROBE = """
import json, sys
import {extra_import}
from coalition import cli
parser = cli.build_parser()
for argv in {argvs}:
    try:
        parser.parse_args(argv)
    except SystemExit:
        pass
print(json.dumps(sorted({{name.split(".")[0] for name in sys.modules}})))
"""


def loaded_packages(*argvs: list[str], extra_import: str = "coalition") -> set[str]:
    """The top-level packages a fresh interpreter holds after parsing each of `argvs`."""
    result = subprocess.run(
        [sys.executable, "-c", PROBE.format(argvs=list(argvs), extra_import=extra_import)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return set(json.loads(result.stdout.splitlines()[-1]))


def test_building_and_parsing_every_command_loads_nothing_heavy() -> None:
    argvs = [
        ["--help"],
        ["settle", "run", "--period", "2026-11"],
        ["reconcile", "run", "--partner", "p", "file.csv", "--period", "2026-11"],
        ["report", "--period", "2026-11", "--out", "out"],
        ["jobs", "expire", "--as-of", "2026-11-01"],
        ["bench", "--help"],
        ["serve", "--help"],
    ]
    assert loaded_packages(*argvs) & HEAVY_PACKAGES == set()


def test_the_probe_sees_a_heavy_import() -> None:
    """The check above can fail: a parser module that imported SQLAlchemy would be seen."""
    assert "sqlalchemy" in loaded_packages(["--help"], extra_import="coalition.store.engine")


def test_the_installed_command_prints_its_help_fast() -> None:
    cpu_seconds = []
    for _ in range(HELP_RUNS):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        result = subprocess.run(
            [*COALITION, "--help"],
            cwd=REPO_ROOT,
            env=environment(),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu_seconds.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
        assert result.returncode == 0, explain(result)
    assert "demo" in result.stdout and "reconcile" in result.stdout
    assert min(cpu_seconds) < HELP_CPU_SECONDS_MAX, cpu_seconds
