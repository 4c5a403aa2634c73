"""Scheduled jobs inside the hub (scheduler/): of several schedulers on one database exactly
one runs each job per interval, every run is recorded with its outcome and duration, and a
failing job is recorded as failed without stopping the others."""

from __future__ import annotations

import itertools
import time
from datetime import UTC, datetime, timedelta
from functools import partial

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import Engine, func, select

from coalition.programme.config import DEFAULT_PROGRAMME, Programme
from coalition.programme.job_arguments import SCHEDULED_JOB_NAMES
from coalition.reconciliation import jobs
from coalition.scheduler.catalogue import JOBS, Outcome, ScheduledJob
from coalition.scheduler.runner import Scheduler, parse_intervals, run_job
from coalition.scheduler.status import last_runs
from coalition.store.schema import reconciliation_jobs
from coalition.store.unit_of_work import UnitOfWork

pytestmark = pytest.mark.integration

SCHEDULERS = 3  # as three hub processes would
RACE_SECONDS = 3.5
HOLDS_INTERVAL_SECONDS = 1


def runs_of(engine: Engine, job_name: str) -> list[tuple[str, datetime, datetime | None]]:
    job = reconciliation_jobs.c
    with engine.connect() as connection:
        return [
            (row.status, row.start_time, row.end_time)
            for row in connection.execute(
                select(job.status, job.start_time, job.end_time)
                .where(job.job_name == job_name)
                .order_by(job.job_id)
            )
        ]


def test_of_several_schedulers_one_runs_each_job_per_interval(engine: Engine) -> None:
    intervals = {**parse_intervals([]), "holds": HOLDS_INTERVAL_SECONDS}
    schedulers = [
        Scheduler(partial(UnitOfWork, engine), intervals, DEFAULT_PROGRAMME).start()
        for _ in range(SCHEDULERS)
    ]
    time.sleep(RACE_SECONDS)
    for scheduler in schedulers:
        scheduler.stop(timeout_seconds=30)

    holds = runs_of(engine, "holds")
    assert len(holds) >= 2, holds
    assert {status for status, _, _ in holds} == {"succeeded"}
    starts = [start for _, start, _ in holds]
    gaps = [later - earlier for earlier, later in itertools.pairwise(starts)]
    assert all(gap >= timedelta(seconds=HOLDS_INTERVAL_SECONDS) for gap in gaps), gaps
    for name in ("expire", "tiers", "integrity"):  # due once at start, then not for a day
        assert [status for status, _, _ in runs_of(engine, name)] == ["succeeded"], name
    shown = {run.job_name: run for run in last_runs(UnitOfWork(engine, read_only=True))}
    assert sorted(shown) == sorted(JOBS)
    assert all(
        run.duration_seconds is not None and run.duration_seconds >= 0 for run in shown.values()
    )
    assert shown["integrity"].detail is not None and "0 failed" in shown["integrity"].detail


def test_a_failing_job_is_recorded_failed_and_measured(engine: Engine) -> None:
    def broken(_unit_of_work: object, _programme: Programme, _now: datetime) -> Outcome:
        raise RuntimeError("the disk is full")

    job = ScheduledJob("test-broken", 60, broken)
    before = REGISTRY.get_sample_value(
        "coalition_job_duration_seconds_count", {"job": "test-broken", "outcome": "failed"}
    )

    status = run_job(partial(UnitOfWork, engine), job, DEFAULT_PROGRAMME, lambda: datetime.now(UTC))

    assert status == "failed"
    [(recorded, _, end_time)] = runs_of(engine, "test-broken")
    assert recorded == "failed" and end_time is not None
    [run] = [r for r in last_runs(UnitOfWork(engine, read_only=True)) if r.job_name == job.name]
    assert run.detail == "RuntimeError: the disk is full" and run.lease_expires_at is None
    after = REGISTRY.get_sample_value(
        "coalition_job_duration_seconds_count", {"job": "test-broken", "outcome": "failed"}
    )
    assert after == (before or 0) + 1
    assert REGISTRY.get_sample_value(
        "coalition_job_last_end_timestamp_seconds", {"job": "test-broken", "outcome": "failed"}
    )


def test_a_job_that_ran_within_the_interval_is_not_due_and_nothing_is_written(
    engine: Engine,
) -> None:
    clock = partial(datetime.now, UTC)
    assert (
        run_job(partial(UnitOfWork, engine), JOBS["holds"], DEFAULT_PROGRAMME, clock) == "succeeded"
    )
    count = len(runs_of(engine, "holds"))
    since = datetime.now(UTC) - timedelta(minutes=1)

    assert (
        run_job(partial(UnitOfWork, engine), JOBS["holds"], DEFAULT_PROGRAMME, clock, since)
        == "not due"
    )
    with pytest.raises(jobs.JobNotDue):
        jobs.acquire(UnitOfWork(engine), "holds", "elsewhere:1", clock(), since)
    assert len(runs_of(engine, "holds")) == count
    with engine.connect() as connection:
        leases = connection.execute(select(func.count()).select_from(jobs.reconciliation_leases))
        assert leases.scalar_one() == 0


def test_a_job_held_elsewhere_is_busy(engine: Engine) -> None:
    held = jobs.acquire(UnitOfWork(engine), "tiers", "elsewhere:1", datetime.now(UTC))
    assert (
        run_job(
            partial(UnitOfWork, engine),
            JOBS["tiers"],
            DEFAULT_PROGRAMME,
            partial(datetime.now, UTC),
        )
        == "busy"
    )
    jobs.release(UnitOfWork(engine), held, datetime.now(UTC))


def test_intervals_name_known_jobs_and_bounded_seconds() -> None:
    assert sorted(SCHEDULED_JOB_NAMES) == sorted(JOBS), "the light parser lists every job"
    assert parse_intervals(["holds=5"])["holds"] == 5
    for bad in ("nope=5", "holds=0", "holds=-1", "holds=x", "holds", f"holds={10**9}"):
        with pytest.raises(ValueError, match="--job-interval"):
            parse_intervals([bad])
