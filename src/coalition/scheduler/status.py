"""The last run of every job, as `coalition jobs status` prints it: when, how, how long."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select

from coalition.store.schema import reconciliation_jobs, reconciliation_leases
from coalition.store.unit_of_work import UnitOfWork

JOB_NAMES_LISTED_MAX = 1000


@dataclass(frozen=True)
class LastRun:
    job_name: str
    status: str
    start_time: datetime
    end_time: datetime | None
    holder: str
    detail: str | None
    lease_expires_at: datetime | None  # set while a process holds the job's lease

    @property
    def duration_seconds(self) -> float | None:
        if self.end_time is None:
            return None
        return (self.end_time - self.start_time).total_seconds()


def last_runs(uow: UnitOfWork) -> list[LastRun]:
    """Per job name, its latest run (the job_name, job_id index), with its live lease."""
    job, lease = reconciliation_jobs.c, reconciliation_leases.c
    latest = (
        select(func.max(job.job_id).label("job_id"))
        .group_by(job.job_name)
        .limit(JOB_NAMES_LISTED_MAX)
        .subquery()
    )
    statement = (
        select(reconciliation_jobs, lease.expires_at)
        .join(latest, latest.c.job_id == job.job_id)
        .outerjoin(reconciliation_leases, lease.job_name == job.job_name)
        .order_by(job.job_name)
    )
    with uow:
        return [
            LastRun(
                row.job_name,
                row.status,
                row.start_time,
                row.end_time,
                row.holder,
                row.detail,
                row.expires_at,
            )
            for row in uow.connection.execute(statement)
        ]
