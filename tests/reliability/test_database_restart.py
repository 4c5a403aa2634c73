"""A PostgreSQL restart under load: the hub says NOT_SERVING, then SERVING again without being
restarted; clients see UNAVAILABLE (and retry), never INTERNAL; nothing is lost or doubled.

Runs on a private throwaway cluster (tests/reliability/postgres.py), never the shared server.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2
from sqlalchemy import Engine

from coalition.partners.sync import sync_partners
from coalition.store import migrate
from coalition.store.engine import create_database_engine
from coalition.store.unit_of_work import UnitOfWork
from tests.conftest import TEST_PARTNERS, api_key
from tests.integration.ledger_checks import assert_ledger_sound
from tests.process.commands import Server, health_status, running_server
from tests.reliability import postgres
from tests.reliability.load import CURRENCY, Worker, check_outcomes, run_workers
from tests.reliability.support import scaled
from tests.reliability.test_bank import enroll_members

pytestmark = [
    pytest.mark.reliability,
    pytest.mark.skipif(not postgres.available(), reason="needs PostgreSQL 15 binaries"),
]

WORKERS = scaled(4, 16)
OPERATIONS_PER_WORKER_MAX = 100_000  # the load runs until the restarts are over
LOAD_AFTER_RECOVERY_SECONDS = scaled(1, 10)
RESTARTS = scaled(1, 5)
OUTAGE_SECONDS = 2.0
HEALTH_TIMEOUT_SECONDS = 20.0
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@pytest.fixture
def cluster() -> Iterator[postgres.PrivatePostgres]:
    with postgres.private_postgres() as cluster:
        yield cluster


@pytest.fixture
def private_engine(cluster: postgres.PrivatePostgres) -> Iterator[Engine]:
    engine = create_database_engine(cluster.url)
    migrate.upgrade(engine)
    sync_partners(UnitOfWork(engine), list(TEST_PARTNERS), datetime.now(UTC))
    yield engine
    engine.dispose()


def wait_for_health(server: Server, wanted: int) -> float:
    """Seconds until the hub reports `wanted`; fails after HEALTH_TIMEOUT_SECONDS."""
    started = time.monotonic()
    while time.monotonic() - started < HEALTH_TIMEOUT_SECONDS:
        assert server.process.poll() is None, f"the hub exited:\n{server.log()}"
        if health_status(server.address) == wanted:
            return time.monotonic() - started
        time.sleep(0.1)
    raise AssertionError(f"health never became {wanted}:\n{server.log()}")


def test_postgres_restart_mid_load_is_unavailable_then_recovers(
    cluster: postgres.PrivatePostgres, private_engine: Engine, tmp_path: Path
) -> None:
    with (
        running_server(["--db", cluster.url], tmp_path / "hub.log") as server,
        grpc.insecure_channel(server.address) as channel,
    ):
        member_ids = enroll_members(channel, private_engine, 4)
        partners = sorted(CURRENCY)
        workers = [
            Worker(
                [channel],
                partners[index % len(partners)],
                api_key(private_engine, partners[index % len(partners)]),
                member_ids,
                seed=200 + index,
            )
            for index in range(WORKERS)
        ]
        health_seen: list[str] = []
        stop = threading.Event()

        def restart_mid_load() -> None:
            for _ in range(RESTARTS):
                time.sleep(0.5)
                cluster.stop("fast")
                wait_for_health(server, NOT_SERVING)
                health_seen.append("NOT_SERVING")
                time.sleep(OUTAGE_SECONDS)
                cluster.start()
                wait_for_health(server, SERVING)
                health_seen.append("SERVING")
            time.sleep(LOAD_AFTER_RECOVERY_SECONDS)
            stop.set()

        restarter = threading.Thread(target=restart_mid_load, daemon=True)
        restarter.start()
        seen = run_workers(workers, OPERATIONS_PER_WORKER_MAX, stop)
        restarter.join(timeout=HEALTH_TIMEOUT_SECONDS * 3)
        assert health_seen == ["NOT_SERVING", "SERVING"] * RESTARTS, server.log()
        assert server.process.poll() is None  # recovered without a restart of the hub
        log = server.log_path.read_text(errors="replace")
    assert "INTERNAL" not in str(dict(seen.codes)) and "UNKNOWN" not in str(dict(seen.codes))
    assert seen.codes.get("UNAVAILABLE", 0) > 0, f"the outage was not felt: {dict(seen.codes)}"
    assert "unexpected failure" not in log and "database failure" not in log, log[-3000:]
    check_outcomes(private_engine, seen)
    assert_ledger_sound(private_engine)
