"""The scheduler thread of a hub process (`coalition serve --jobs`).

Every tick it asks, for each job, when the job last started anywhere (one index read of
`reconciliation_jobs`); a job whose interval has passed is run under its lease. Several hub
processes (workers, machines) may all run a scheduler: the lease lets one of them run each
job, and the others see the fresh run at their next tick and wait for the next interval.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from coalition.observability.metrics import JOB_DURATION, JOB_LAST_END
from coalition.programme.config import Programme
from coalition.reconciliation.jobs import JobAlreadyRunning, JobNotDue, scheduled_job
from coalition.scheduler.catalogue import JOBS, ScheduledJob, UnitOfWorkFactory
from coalition.store.schema import reconciliation_jobs
from coalition.store.unit_of_work import UnitOfWork

logger = logging.getLogger(__name__)

TICK_SECONDS_MIN = 1.0
TICK_SECONDS_MAX = 30.0
INTERVAL_SECONDS_MIN = 1
INTERVAL_SECONDS_MAX = 31 * 24 * 60 * 60


def parse_intervals(texts: list[str]) -> dict[str, int]:
    """`NAME=SECONDS` overrides of the jobs' intervals; ValueError names the bad one."""
    intervals = {name: job.interval_seconds for name, job in JOBS.items()}
    for text in texts:
        name, _, seconds = text.partition("=")
        if name not in JOBS:
            raise ValueError(f"--job-interval {text!r}: no job {name!r} (jobs: {', '.join(JOBS)})")
        if (
            not seconds.isdigit()
            or not INTERVAL_SECONDS_MIN <= int(seconds) <= INTERVAL_SECONDS_MAX
        ):
            raise ValueError(
                f"--job-interval {text!r}: seconds from {INTERVAL_SECONDS_MIN} to "
                f"{INTERVAL_SECONDS_MAX}"
            )
        intervals[name] = int(seconds)
    return intervals


def last_start_time(uow: UnitOfWork, job_name: str) -> datetime | None:
    job = reconciliation_jobs.c
    with uow:
        return uow.connection.execute(
            select(job.start_time)
            .where(job.job_name == job_name)
            .order_by(job.job_id.desc())
            .limit(1)
        ).scalar_one_or_none()


def run_job(
    unit_of_work: UnitOfWorkFactory,
    job: ScheduledJob,
    programme: Programme,
    clock: Callable[[], datetime],
    started_since: datetime | None = None,
) -> str:
    """Run `job` once under its lease and record it; its status, or `busy` when another
    process holds the lease, or `not due` when a run started at or after `started_since`."""
    started = time.perf_counter()
    try:
        with scheduled_job(unit_of_work, job.name, clock, started_since) as record:
            outcome = job.run(unit_of_work, programme, clock())
            record.status = "flagged" if outcome.flagged else "succeeded"
            record.detail = outcome.detail
    except JobAlreadyRunning:
        return "busy"
    except JobNotDue:
        return "not due"
    except Exception:
        logger.exception("scheduled job %s failed", job.name)
        _measure(job.name, "failed", started)
        return "failed"
    _measure(job.name, record.status, started)
    return record.status


def _measure(job_name: str, outcome: str, started: float) -> None:
    JOB_DURATION.labels(job_name, outcome).observe(time.perf_counter() - started)
    JOB_LAST_END.labels(job_name, outcome).set(time.time())


class Scheduler:
    """A daemon thread running due jobs until `stop()`."""

    def __init__(
        self, unit_of_work: UnitOfWorkFactory, intervals: Mapping[str, int], programme: Programme
    ) -> None:
        self._unit_of_work = unit_of_work
        self._programme = programme
        self._intervals = dict(intervals)
        self._stopping = threading.Event()
        tick = min(self._intervals.values()) / 2
        self._tick_seconds = max(TICK_SECONDS_MIN, min(TICK_SECONDS_MAX, tick))
        self._thread = threading.Thread(target=self._loop, name="scheduler", daemon=True)

    def start(self) -> Scheduler:
        self._thread.start()
        logger.info(
            "scheduled jobs: %s",
            ", ".join(f"{name} every {seconds} s" for name, seconds in self._intervals.items()),
        )
        return self

    def stop(self, timeout_seconds: float = 5.0) -> None:
        self._stopping.set()
        self._thread.join(timeout=timeout_seconds)

    def _loop(self) -> None:
        while not self._stopping.is_set():
            for name, seconds in self._intervals.items():
                if self._stopping.is_set():
                    return
                try:
                    if self._due(name, seconds):  # a cheap read first; decided under the lease
                        since = _now() - timedelta(seconds=seconds)
                        run_job(self._unit_of_work, JOBS[name], self._programme, _now, since)
                except Exception:  # the database is down: try again at the next tick
                    logger.exception("scheduler: cannot check job %s", name)
            self._stopping.wait(self._tick_seconds)

    def _due(self, name: str, interval_seconds: int) -> bool:
        started = last_start_time(self._unit_of_work(read_only=True), name)
        return started is None or _now() - started >= timedelta(seconds=interval_seconds)


def _now() -> datetime:
    return datetime.now(UTC)
