"""The `coalition jobs ...` commands: scheduled programme jobs, run by cron or a scheduler
(parsers: programme/job_arguments.py).

- `coalition jobs expire [--as-of WHEN]`: expire lots due at WHEN (ledger/expiry.py);
- `coalition jobs holds [--as-of WHEN]`: release burn holds past their TTL (ledger/holds.py);
- `coalition jobs tiers [--as-of WHEN] [--programme DIR]`: the tier downgrade review.

WHEN is an ISO 8601 date (meaning 00:00 UTC that day) or a date-time with an offset; it
defaults to now and may not lie in the future. Every job is idempotent: running it again
for the same WHEN changes nothing.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial

from sqlalchemy import Engine

from coalition.ledger.expiry import EXPIRY_BATCH_SIZE_DEFAULT, expire_lots
from coalition.ledger.holds import RELEASE_BATCH_SIZE_DEFAULT, release_expired_holds
from coalition.programme.config import Programme, configured_programme
from coalition.programme.tiers import REVIEW_BATCH_SIZE_DEFAULT, review_tiers
from coalition.scheduler.catalogue import JOBS
from coalition.scheduler.runner import run_job
from coalition.scheduler.status import last_runs
from coalition.settings import Settings
from coalition.store import migrate
from coalition.store.unit_of_work import UnitOfWork


def run_expire(engine: Engine, arguments: argparse.Namespace) -> int:
    now = datetime.now(UTC)
    batch_size = arguments.batch_size or EXPIRY_BATCH_SIZE_DEFAULT
    report = expire_lots(_unit_of_work(engine), arguments.as_of or now, now, batch_size)
    print(
        f"expired {report.points_expired} points in {report.lots_expired} lots "
        f"({report.batches} batches)"
    )
    return 0


def run_holds(engine: Engine, arguments: argparse.Namespace) -> int:
    now = datetime.now(UTC)
    as_of = arguments.as_of or now
    _refuse_future(as_of, now)
    batch_size = arguments.batch_size or RELEASE_BATCH_SIZE_DEFAULT
    report = release_expired_holds(_unit_of_work(engine), as_of, batch_size)
    print(f"released {report.holds_released} holds past their TTL ({report.batches} batches)")
    return 0


def run_tiers(programme: Programme, engine: Engine, arguments: argparse.Namespace) -> int:
    now = datetime.now(UTC)
    as_of = arguments.as_of or now
    _refuse_future(as_of, now)
    batch_size = arguments.batch_size or REVIEW_BATCH_SIZE_DEFAULT
    report = review_tiers(_unit_of_work(engine), programme.ladder, as_of, now, batch_size)
    print(
        f"reviewed {report.members_reviewed} members above the base tier, "
        f"downgraded {report.members_downgraded}"
    )
    return 0


def run_status(engine: Engine, arguments: argparse.Namespace) -> int:
    now = datetime.now(UTC)
    _unit_of_work(engine)  # migrates an empty database, refuses an outdated one
    runs = last_runs(UnitOfWork(engine, read_only=True))
    if not runs:
        print("no job has run yet (coalition serve --jobs, or coalition jobs run NAME)")
    for run in runs:
        duration = "-" if run.duration_seconds is None else f"{run.duration_seconds:.2f} s"
        lease = (
            f"  running in {run.holder} (lease until {run.lease_expires_at.isoformat()})"
            if run.lease_expires_at is not None and run.lease_expires_at > now
            else ""
        )
        print(
            f"{run.job_name:<24} {run.status:<10} started {run.start_time.isoformat()}  "
            f"took {duration}  by {run.holder}  {run.detail or ''}{lease}"
        )
    return 0


def run_scheduled(programme: Programme, engine: Engine, arguments: argparse.Namespace) -> int:
    clock = partial(datetime.now, UTC)
    status = run_job(_unit_of_work(engine), JOBS[arguments.name], programme, clock)
    print(f"{arguments.name}: {status}")
    if status == "busy":
        print(f"error: JOB_ALREADY_RUNNING: {arguments.name} runs elsewhere", file=sys.stderr)
        return EXIT_ALREADY_RUNNING
    return 0 if status == "succeeded" else 1


def _refuse_future(as_of: datetime, now: datetime) -> None:
    if as_of > now:
        raise RuntimeError("--as-of may not lie in the future")


def _unit_of_work(engine: Engine) -> Callable[[], UnitOfWork]:
    migrate.prepare(engine)
    return partial(UnitOfWork, engine)


def _disposing(
    run: Callable[[Engine, argparse.Namespace], int],
) -> Callable[[Engine, argparse.Namespace], int]:
    """Run a job, then close the engine's connections (a job is the whole process's work)."""

    def run_then_dispose(engine: Engine, arguments: argparse.Namespace) -> int:
        try:
            return run(engine, arguments)
        finally:
            engine.dispose()

    return run_then_dispose


EXIT_ALREADY_RUNNING = 75  # EX_TEMPFAIL, as `coalition reconcile` (retry later)


def job_commands(settings: Settings) -> dict[str, Callable[[Engine, argparse.Namespace], int]]:
    """The handlers of `coalition jobs ...`; the programme (tiers) is the settings' (its
    files are read only by the commands that use it)."""

    def with_programme(
        run: Callable[[Programme, Engine, argparse.Namespace], int],
    ) -> Callable[[Engine, argparse.Namespace], int]:
        def run_with_programme(engine: Engine, arguments: argparse.Namespace) -> int:
            programme = configured_programme(settings.programme_directory, settings.referral)
            return run(programme, engine, arguments)

        return run_with_programme

    return {
        "jobs expire": _disposing(run_expire),
        "jobs holds": _disposing(run_holds),
        "jobs tiers": _disposing(with_programme(run_tiers)),
        "jobs status": _disposing(run_status),
        "jobs run": _disposing(with_programme(run_scheduled)),
    }
