"""Scheduled jobs (reconcile, integrity): a lease so that one runs at a time, and a record.

The lease is a row in `reconciliation_leases`, the same mechanism on SQLite and PostgreSQL:
taking it is one short transaction that reads the row under a lock (`FOR UPDATE` on
PostgreSQL, `BEGIN IMMEDIATE` on SQLite) and refuses while it is live. A lease outlives the
job's runtime bound (`JOB_RUNTIME_SECONDS_MAX`, enforced by the job itself), so a lease past
its expiry can only belong to a holder that died; the next job takes it over and records the
dead one as abandoned.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite

from coalition.domain.errors import Unavailable
from coalition.store.schema import reconciliation_jobs, reconciliation_leases
from coalition.store.unit_of_work import UnitOfWork

JOB_RUNTIME_SECONDS_MAX = 30 * 60
JOB_LEASE_SECONDS = JOB_RUNTIME_SECONDS_MAX + 15 * 60
DETAIL_LENGTH_MAX = 1000

Clock = Callable[[], datetime]


class JobAlreadyRunning(Unavailable):
    def __init__(self, job_name: str, holder: str, expires_at: datetime) -> None:
        super().__init__(
            "JOB_ALREADY_RUNNING",
            f"job {job_name!r} is running in {holder} (lease until {expires_at.isoformat()}); "
            "retry when it has finished",
            {"job_name": job_name, "holder": holder, "expires_at": expires_at.isoformat()},
        )


class JobNotDue(Exception):
    """The job ran (started) after the instant its caller asked about: nothing to do yet."""


@dataclass
class Job:
    """A running job: the caller sets `status` (succeeded or flagged) and `detail`."""

    job_id: int
    job_name: str
    holder: str
    status: str = "succeeded"
    detail: str = ""


def job_holder() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@contextmanager
def scheduled_job(
    unit_of_work: Callable[[], UnitOfWork],
    job_name: str,
    clock: Clock,
    started_since: datetime | None = None,
) -> Iterator[Job]:
    """Hold the job's lease for the block; record its end as the block sets it, or `failed`.
    With `started_since`: JobNotDue if a run started at or after it (see `acquire`)."""
    job = acquire(unit_of_work(), job_name, job_holder(), clock(), started_since)
    try:
        yield job
    except BaseException as error:
        job.status, job.detail = "failed", f"{type(error).__name__}: {error}"
        raise
    finally:
        release(unit_of_work(), job, clock())


def acquire(
    uow: UnitOfWork,
    job_name: str,
    holder: str,
    now: datetime,
    started_since: datetime | None = None,
) -> Job:
    """Take the job's lease and record its start. With `started_since`, a run that started at
    or after it makes the job not due (JobNotDue): checked under the lease row's lock, so that
    of several schedulers asking at once exactly one runs it per interval."""
    lease = reconciliation_leases.c
    with uow:
        existing = uow.connection.execute(
            select(reconciliation_leases).where(lease.job_name == job_name).with_for_update()
        ).one_or_none()
        if existing is not None and existing.expires_at > now:
            raise JobAlreadyRunning(job_name, existing.holder, existing.expires_at)
        if started_since is not None and _started_since(uow, job_name, started_since):
            raise JobNotDue(job_name)
        job_id = uow.connection.execute(
            insert(reconciliation_jobs)
            .values(job_name=job_name, holder=holder, status="running", start_time=now)
            .returning(reconciliation_jobs.c.job_id)
        ).scalar_one()
        expires_at = now + timedelta(seconds=JOB_LEASE_SECONDS)
        if existing is None:
            _insert_lease(uow, job_name, job_id, holder, expires_at)
        else:
            _take_over(uow, existing.job_id, job_name, job_id, holder, expires_at, now)
        uow.commit()
    return Job(job_id=job_id, job_name=job_name, holder=holder)


def _started_since(uow: UnitOfWork, job_name: str, since: datetime) -> bool:
    job = reconciliation_jobs.c
    latest = uow.connection.execute(
        select(job.start_time).where(job.job_name == job_name).order_by(job.job_id.desc()).limit(1)
    ).scalar_one_or_none()
    return latest is not None and latest >= since


def _insert_lease(
    uow: UnitOfWork, job_name: str, job_id: int, holder: str, expires_at: datetime
) -> None:
    # Two first-ever acquirers both see no row; the primary key lets exactly one insert it.
    insert_module = postgresql if uow.dialect_name == "postgresql" else sqlite
    inserted = uow.connection.execute(
        insert_module.insert(reconciliation_leases)
        .values(job_name=job_name, job_id=job_id, holder=holder, expires_at=expires_at)
        .on_conflict_do_nothing()
        .returning(reconciliation_leases.c.job_name)
    ).first()
    if inserted is None:
        live = uow.connection.execute(
            select(reconciliation_leases).where(reconciliation_leases.c.job_name == job_name)
        ).one()
        raise JobAlreadyRunning(job_name, live.holder, live.expires_at)


def _take_over(
    uow: UnitOfWork,
    dead_job_id: int,
    job_name: str,
    job_id: int,
    holder: str,
    expires_at: datetime,
    now: datetime,
) -> None:
    uow.connection.execute(
        update(reconciliation_jobs)
        .where(
            reconciliation_jobs.c.job_id == dead_job_id,
            reconciliation_jobs.c.status == "running",
        )
        .values(status="abandoned", end_time=now, detail="its lease expired: the holder died")
    )
    moved = uow.connection.execute(
        update(reconciliation_leases)
        .where(
            reconciliation_leases.c.job_name == job_name,
            reconciliation_leases.c.job_id == dead_job_id,
        )
        .values(job_id=job_id, holder=holder, expires_at=expires_at)
    ).rowcount
    assert moved == 1, "the expired lease was read under a lock"


def release(uow: UnitOfWork, job: Job, now: datetime) -> None:
    with uow:
        uow.connection.execute(
            update(reconciliation_jobs)
            .where(reconciliation_jobs.c.job_id == job.job_id)
            .values(status=job.status, end_time=now, detail=job.detail[:DETAIL_LENGTH_MAX])
        )
        uow.connection.execute(
            delete(reconciliation_leases).where(
                reconciliation_leases.c.job_name == job.job_name,
                reconciliation_leases.c.job_id == job.job_id,
            )
        )
        uow.commit()
