"""The jobs the hub can schedule, and how often each runs by default.

Each job is one function of (unit of work factory, the process's programme, now) returning
its outcome; the scheduler
(scheduler/runner.py) and `coalition jobs run` call the same functions, under the same lease
and record (reconciliation/jobs.py), so a run looks the same wherever it happened.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from coalition.ledger.expiry import expire_lots
from coalition.ledger.holds import release_expired_holds
from coalition.programme.config import Programme
from coalition.programme.tiers import review_tiers
from coalition.reconciliation import integrity
from coalition.store.unit_of_work import UnitOfWork

UnitOfWorkFactory = Callable[..., UnitOfWork]  # read_only=True for reads


@dataclass(frozen=True)
class Outcome:
    flagged: bool  # finished, but found something to look at (an integrity check failed)
    detail: str


@dataclass(frozen=True)
class ScheduledJob:
    name: str
    interval_seconds: int  # default; `serve --job-interval NAME=SECONDS` overrides it
    run: Callable[[UnitOfWorkFactory, Programme, datetime], Outcome]


def _expire(unit_of_work: UnitOfWorkFactory, _programme: Programme, now: datetime) -> Outcome:
    report = expire_lots(unit_of_work, now, now)
    return Outcome(False, f"expired {report.points_expired} points in {report.lots_expired} lots")


def _holds(unit_of_work: UnitOfWorkFactory, _programme: Programme, now: datetime) -> Outcome:
    report = release_expired_holds(unit_of_work, now)
    return Outcome(False, f"released {report.holds_released} holds past their TTL")


def _tiers(unit_of_work: UnitOfWorkFactory, programme: Programme, now: datetime) -> Outcome:
    report = review_tiers(unit_of_work, programme.ladder, now, now)
    return Outcome(
        False,
        f"reviewed {report.members_reviewed} members, downgraded {report.members_downgraded}",
    )


def _integrity(unit_of_work: UnitOfWorkFactory, _programme: Programme, now: datetime) -> Outcome:
    report = integrity.prove(unit_of_work(read_only=True), None, None, lambda _result: None)
    failed, skipped = len(report.failed), len(report.skipped)
    passed = len(report.results) - failed - skipped
    return Outcome(bool(failed or skipped), f"{passed} passed, {failed} failed, {skipped} skipped")


JOBS: dict[str, ScheduledJob] = {
    job.name: job
    for job in (
        ScheduledJob("holds", 60, _holds),
        ScheduledJob("expire", 60 * 60, _expire),
        ScheduledJob("tiers", 24 * 60 * 60, _tiers),
        ScheduledJob("integrity", 24 * 60 * 60, _integrity),
    )
}
