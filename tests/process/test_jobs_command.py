"""`coalition serve --jobs`, `coalition jobs status` and `coalition jobs run`, real processes:
two hub workers schedule the jobs, one runs each per interval, and both the command line and
the metrics show each run."""

from __future__ import annotations

import re
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.process.commands import explain, free_port, run_coalition, running_server

pytestmark = pytest.mark.process

HOLDS_INTERVAL_SECONDS = 1
WAIT_SECONDS_MAX = 30.0
STATUS_ROW = re.compile(
    r"^(?P<job>\S+)\s+(?P<status>\S+)\s+started (?P<start>\S+)\s+took (?P<took>[\d.]+) s\s+by "
    r"(?P<holder>\S+)",
    re.M,
)


def job_status(database_url: str) -> dict[str, re.Match[str]]:
    result = run_coalition("jobs", "status", "--db", database_url)
    assert result.returncode == 0, explain(result)
    return {match["job"]: match for match in STATUS_ROW.finditer(result.stdout)}


def scraped(port: int) -> str:
    """The metrics a worker serves on `port`, waiting a little for a worker still starting."""
    deadline = time.monotonic() + 10
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as page:
                return str(page.read().decode())
        except urllib.error.URLError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def free_port_pair() -> int:
    """A port free with the next one too: worker n serves its metrics on port + n."""
    while True:
        port = free_port()
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port


def test_serve_jobs_runs_every_job_under_a_lease_and_shows_each_run(
    database_url: str, tmp_path: Path
) -> None:
    metrics_port = free_port_pair()
    arguments = [
        "--db", database_url, "--workers", "2", "--jobs",
        "--job-interval", f"holds={HOLDS_INTERVAL_SECONDS}",
        "--metrics-listen", f"127.0.0.1:{metrics_port}",
    ]  # fmt: skip
    with running_server(arguments, tmp_path / "serve.log") as server:
        deadline = time.monotonic() + WAIT_SECONDS_MAX
        while time.monotonic() < deadline:
            shown = job_status(database_url)
            if set(shown) == {"holds", "expire", "tiers", "integrity"} and all(
                row["status"] == "succeeded" for row in shown.values()
            ):
                break
            time.sleep(0.5)
        else:
            raise AssertionError(f"jobs never all ran:\n{server.log()}")
        metrics = scraped(metrics_port) + scraped(metrics_port + 1)  # worker 0 and worker 1
    assert re.search(
        r'coalition_job_duration_seconds_count\{job="holds",outcome="succeeded"\}', metrics
    )
    runs = {
        (line.split("{")[1].split(",")[0], float(line.rsplit(" ", 1)[1]))
        for line in metrics.splitlines()
        if line.startswith("coalition_job_duration_seconds_count{")
    }
    # Each of the day-long jobs ran once, in one of the two workers only.
    for job in ("expire", "tiers", "integrity"):
        assert sum(count for name, count in runs if name == f'job="{job}"') == 1, runs
    before = job_status(database_url)["holds"]["start"]
    ran = run_coalition("jobs", "run", "holds", "--db", database_url)  # as cron would, now
    assert ran.returncode == 0 and ran.stdout.strip() == "holds: succeeded", explain(ran)
    assert job_status(database_url)["holds"]["start"] > before


def test_job_interval_without_jobs_is_refused(database_url: str) -> None:
    result = run_coalition("serve", "--db", database_url, "--job-interval", "holds=5")
    assert result.returncode == 1
    assert "--job-interval needs --jobs" in result.stderr
    bad = run_coalition("serve", "--db", database_url, "--jobs", "--job-interval", "nope=5")
    assert bad.returncode == 1 and "no job 'nope'" in bad.stderr
