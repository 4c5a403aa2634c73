"""Job safety: one holder of a lease at a time, recorded start, end and status."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from functools import partial

import pytest
from sqlalchemy import Engine, select

from coalition.reconciliation import jobs
from coalition.reconciliation.jobs import JobAlreadyRunning, scheduled_job
from coalition.store.schema import reconciliation_jobs, reconciliation_leases
from coalition.store.unit_of_work import UnitOfWork

pytestmark = pytest.mark.integration


def now() -> datetime:
    return datetime.now(UTC)


def job_rows(engine: Engine) -> list[tuple[str, str, bool]]:
    with engine.connect() as connection:
        return [
            (row.job_name, row.status, row.end_time is not None)
            for row in connection.execute(
                select(reconciliation_jobs).order_by(reconciliation_jobs.c.job_id)
            )
        ]


def test_a_live_lease_refuses_a_second_run_and_is_released_at_the_end(engine: Engine) -> None:
    with scheduled_job(partial(UnitOfWork, engine), "integrity", now) as job:
        with pytest.raises(JobAlreadyRunning) as caught:
            jobs.acquire(UnitOfWork(engine), "integrity", "other:1", now())
        assert caught.value.reason == "JOB_ALREADY_RUNNING"
        jobs.release(
            UnitOfWork(engine), jobs.acquire(UnitOfWork(engine), "other", "h:1", now()), now()
        )
        job.status, job.detail = "flagged", "1 failed"
    assert job_rows(engine) == [("integrity", "flagged", True), ("other", "succeeded", True)]
    with engine.connect() as connection:
        assert connection.execute(select(reconciliation_leases)).all() == []


def test_a_failing_job_is_recorded_failed_and_frees_its_lease(engine: Engine) -> None:
    with pytest.raises(RuntimeError), scheduled_job(partial(UnitOfWork, engine), "x", now):
        raise RuntimeError("boom")
    assert job_rows(engine) == [("x", "failed", True)]
    jobs.release(UnitOfWork(engine), jobs.acquire(UnitOfWork(engine), "x", "h:1", now()), now())


def test_an_expired_lease_is_taken_over_and_its_job_marked_abandoned(engine: Engine) -> None:
    long_ago = now() - timedelta(seconds=jobs.JOB_LEASE_SECONDS + 1)
    jobs.acquire(UnitOfWork(engine), "integrity", "dead:1", long_ago)
    job = jobs.acquire(UnitOfWork(engine), "integrity", "alive:2", now())
    assert job_rows(engine) == [("integrity", "abandoned", True), ("integrity", "running", False)]
    jobs.release(UnitOfWork(engine), job, now())


def test_racing_instances_get_exactly_one_lease(engine: Engine) -> None:
    outcomes: list[str] = []
    barrier = threading.Barrier(4)

    def contend(index: int) -> None:
        barrier.wait()
        try:
            jobs.acquire(UnitOfWork(engine), "reconcile:test-coffee", f"h:{index}", now())
            outcomes.append("won")
        except JobAlreadyRunning:
            outcomes.append("refused")

    threads = [threading.Thread(target=contend, args=(index,)) for index in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(outcomes) == ["refused", "refused", "refused", "won"]
