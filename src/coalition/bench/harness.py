"""One bench run: set up the throwaway PostgreSQL database, run the pgbench baselines (the
SQL of one earn, of one burn), run the hub under the same load (unary earn, earn at half its
maximum rate, unary burn, the 80/15/5 mix over two hub processes on two ports, batch earn),
check the ledger invariants; then the same on a SQLite file (the product's default: the hub
against the same statements issued by Python's sqlite3 in one process), check its invariants,
and report."""

from __future__ import annotations

import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy import text

from coalition.bench import cpu
from coalition.bench.invariants import ledger_violations
from coalition.bench.load import LoadResult, LoadSpec, run_load
from coalition.bench.pgbench import PgbenchResult, run_pgbench
from coalition.bench.setup import (
    create_bench_database,
    drop_bench_database,
    prepare_bench_database,
    sqlite_bench_database_url,
)
from coalition.bench.sqlite_baseline import SqliteBaselineResult, run_sqlite_baseline
from coalition.store.engine import create_database_engine

HUB_START_SECONDS_MAX = 60.0
HUB_STOP_SECONDS_MAX = 30.0
# The load each workload sends (load.py), the baseline its ratio is against, and its database.
LOAD_OF_WORKLOAD = {
    "earn": "earn",
    "earn_half_rate": "earn",
    "burn": "burn",
    "mix": "mix",
    "batch_earn": "batch_earn",
    "sqlite_earn": "earn",
    "sqlite_burn": "burn",
}
BASELINE_OF_WORKLOAD = {
    "earn": "pgbench_earn",
    "earn_half_rate": "pgbench_earn",
    "burn": "pgbench_burn",
    "mix": "pgbench_earn",
    "batch_earn": "pgbench_earn",
    "sqlite_earn": "sqlite_earn",
    "sqlite_burn": "sqlite_burn",
}
ALL_WORKLOADS = tuple(LOAD_OF_WORKLOAD)
SQLITE_WORKLOADS = ("sqlite_earn", "sqlite_burn")
# One hub process on the SQLite file (serve's default): SQLite has one writer at a time, and
# the processes of several workers would queue on its file lock.
SQLITE_HUB_WORKERS = 1
RESULTS_FORMAT_VERSION = 2


@dataclass(frozen=True)
class BenchConfig:
    server_url: str = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
    database_name: str = "coalition_bench"
    members: int = 100_000
    requests: int = 20_000  # per unary workload, and the baseline's transactions
    batch_calls: int = 40
    batch_size: int = 1000
    concurrency: int = 16  # in-flight requests: pgbench clients, generator threads in all
    generator_processes: int = 2
    hub_workers: int = 2
    group_window_ms: float = 0.0  # the hubs' `serve --group-window-ms`
    duration_seconds_max: float = 60.0  # per workload
    workloads: tuple[str, ...] = ALL_WORKLOADS
    keep_database: bool = False


def run_bench(config: BenchConfig, progress: Any = print) -> dict[str, Any]:
    assert config.concurrency % config.generator_processes == 0, "threads per process"
    results: dict[str, Any] = {
        "format_version": RESULTS_FORMAT_VERSION,
        "config": asdict(config),
        "machine": _machine(),
        "load_average_before": list(cpu.load_average()),
        "baselines": {},
        "workloads": {},
    }
    if any(w not in SQLITE_WORKLOADS for w in config.workloads):
        _postgres_run(config, results, progress)
    if any(w in SQLITE_WORKLOADS for w in config.workloads):
        _sqlite_run(config, results, progress)
    results["load_average_after"] = list(cpu.load_average())
    _ratios(results)
    return results


def _postgres_run(config: BenchConfig, results: dict[str, Any], progress: Any) -> None:
    started = time.perf_counter()
    url = create_bench_database(config.server_url, config.database_name)
    try:
        database = prepare_bench_database(url, config.members)
        results["setup_seconds"] = round(time.perf_counter() - started, 3)
        progress(f"database ready in {results['setup_seconds']} s; running the pgbench baseline")
        results["baseline"] = results["baselines"]["pgbench_earn"] = _baseline(config, url, "earn")
        if "burn" in config.workloads:
            progress("running the pgbench burn baseline")
            results["baselines"]["pgbench_burn"] = _baseline(config, url, "burn")
        with tempfile.TemporaryDirectory(prefix="coalition-bench-") as directory:
            _hub_workloads(
                config, database.url, database.api_keys, Path(directory), results, progress
            )
        engine = create_database_engine(url)
        try:
            results["invariant_violations"] = ledger_violations(engine)
            results["ledger_rows"] = _row_counts(engine)
        finally:
            engine.dispose()
    finally:
        if not config.keep_database:
            drop_bench_database(config.server_url, config.database_name)


def _sqlite_run(config: BenchConfig, results: dict[str, Any], progress: Any) -> None:
    """The hub on a SQLite file against the same statements in one process (sqlite3), each
    on the same seeded file; with --keep-database the file stays in the working directory."""
    with tempfile.TemporaryDirectory(prefix="coalition-bench-sqlite-") as scratch:
        directory = Path.cwd() if config.keep_database else Path(scratch)
        url = sqlite_bench_database_url(directory)
        started = time.perf_counter()
        database = prepare_bench_database(url, config.members)
        sqlite: dict[str, Any] = {
            "database": url,
            "setup_seconds": round(time.perf_counter() - started, 3),
        }
        results["sqlite"] = sqlite
        progress(f"SQLite file ready in {sqlite['setup_seconds']} s; running its baselines")
        for workload in SQLITE_WORKLOADS:
            if workload in config.workloads:
                outcome = run_sqlite_baseline(
                    url.removeprefix("sqlite:///"),
                    config.members,
                    config.requests,
                    config.duration_seconds_max,
                    LOAD_OF_WORKLOAD[workload],
                )
                results["baselines"][workload] = _sqlite_baseline_summary(outcome, workload)
        port = _free_port()
        with _hub(
            url, port, SQLITE_HUB_WORKERS, Path(scratch) / "hub-sqlite.log", config.group_window_ms
        ) as pid:
            for workload in SQLITE_WORKLOADS:
                if workload in config.workloads:
                    spec = _spec(
                        config, workload, (f"127.0.0.1:{port}",), database.api_keys, results
                    )
                    progress(f"workload {workload}: {spec.requests} calls")
                    results["workloads"][workload] = _measured(
                        spec, [pid], config.concurrency, on_postgres=False
                    )
        engine = create_database_engine(url)
        try:
            sqlite["invariant_violations"] = ledger_violations(engine)
            sqlite["ledger_rows"] = _row_counts(engine)
        finally:
            engine.dispose()


def _baseline(config: BenchConfig, url: str, script: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="coalition-pgbench-") as directory:
        postgres_before = cpu.postgres_cpu_seconds()
        outcome = run_pgbench(
            url,
            config.members,
            clients=config.concurrency,
            threads=config.generator_processes,
            transactions_total=config.requests,
            duration_seconds_max=config.duration_seconds_max,
            directory=Path(directory),
            script=script,
        )
        postgres_seconds = cpu.postgres_cpu_seconds() - postgres_before
    return _pgbench_summary(outcome, postgres_seconds, config.concurrency, script)


def _hub_workloads(
    config: BenchConfig,
    url: str,
    api_keys: dict[str, str],
    directory: Path,
    results: dict[str, Any],
    progress: Any,
) -> None:
    unary = [w for w in config.workloads if w != "mix" and w not in SQLITE_WORKLOADS]
    if unary:
        port = _free_port()
        with _hub(
            url, port, config.hub_workers, directory / "hub.log", config.group_window_ms
        ) as pid:
            for workload in unary:
                spec = _spec(config, workload, (f"127.0.0.1:{port}",), api_keys, results)
                progress(f"workload {workload}: {spec.requests} calls")
                results["workloads"][workload] = _measured(spec, [pid], config.concurrency)
    if "mix" in config.workloads:
        ports = (_free_port(), _free_port())
        with (
            _hub(url, ports[0], 1, directory / "hub-a.log", config.group_window_ms) as first_pid,
            _hub(url, ports[1], 1, directory / "hub-b.log", config.group_window_ms) as second_pid,
        ):
            targets = tuple(f"127.0.0.1:{port}" for port in ports)
            spec = _spec(config, "mix", targets, api_keys, results)
            progress(f"workload mix over two hub processes: {spec.requests} calls")
            results["workloads"]["mix"] = _measured(
                spec, [first_pid, second_pid], config.concurrency
            )
            results["workloads"]["mix"]["hub_processes"] = list(targets)


def _spec(
    config: BenchConfig,
    workload: str,
    targets: tuple[str, ...],
    api_keys: dict[str, str],
    results: dict[str, Any],
) -> LoadSpec:
    rate = None
    if workload == "earn_half_rate":
        earn = results["workloads"].get("earn")
        assert earn is not None, "earn_half_rate runs after earn, at half its throughput"
        rate = max(1.0, earn["throughput_per_second"] / 2)
    batch = workload == "batch_earn"
    return LoadSpec(
        workload=LOAD_OF_WORKLOAD[workload],
        targets=targets,
        api_keys=api_keys,
        members=config.members,
        requests=config.batch_calls if batch else config.requests,
        duration_seconds_max=config.duration_seconds_max,
        processes=config.generator_processes,
        threads_per_process=(
            max(1, min(config.concurrency, 4) // config.generator_processes)
            if batch
            else config.concurrency // config.generator_processes
        ),
        batch_size=config.batch_size,
        rate_per_second=rate,
        run_tag=f"{workload}-{time.time_ns()}",
    )


def _measured(
    spec: LoadSpec, hub_pids: list[int], concurrency: int, on_postgres: bool = True
) -> dict[str, Any]:
    """Hub CPU is its process trees'; PostgreSQL's only where the hub uses it (on SQLite the
    database runs inside the hub, and other databases' load would show up as its CPU)."""
    hub_before = cpu.trees_cpu_seconds(hub_pids)
    postgres_before = cpu.postgres_cpu_seconds() if on_postgres else 0.0
    load = run_load(spec)
    hub_after = cpu.trees_cpu_seconds(hub_pids)
    postgres_seconds = cpu.postgres_cpu_seconds() - postgres_before if on_postgres else None
    by_process = {pid: seconds - hub_before.get(pid, 0.0) for pid, seconds in hub_after.items()}
    summary = _load_summary(spec, load, sum(by_process.values()), postgres_seconds)
    summary["hub_cpu_seconds_by_process"] = _working_processes(by_process)
    return summary


# A hub process that used less than this share of the hub's CPU served no calls (the parent of
# `serve --workers N`, multiprocessing's helpers).
WORKING_PROCESS_CPU_SHARE_MIN = 0.02


def _working_processes(cpu_seconds_by_pid: dict[int, float]) -> list[float]:
    """The CPU seconds of each hub process that served calls, largest first. SO_REUSEPORT
    hashes each client connection to one worker, so 16 connections can split unevenly, and
    with them the calls (groups of one worker larger than the other's)."""
    total = sum(cpu_seconds_by_pid.values())
    return sorted(
        (
            round(seconds, 2)
            for seconds in cpu_seconds_by_pid.values()
            if seconds >= WORKING_PROCESS_CPU_SHARE_MIN * total
        ),
        reverse=True,
    )


def _load_summary(
    spec: LoadSpec, load: LoadResult, hub_seconds: float, postgres_seconds: float | None
) -> dict[str, Any]:
    call_errors = sum(n for code, n in load.errors.items() if code != "BATCH_ITEM_FAILED")
    duration = max(load.duration_seconds, 1e-9)
    return {
        "workload": spec.workload,
        "concurrency": spec.processes * spec.threads_per_process,
        "paced_rate_per_second": spec.rate_per_second,
        "requests": load.requests,
        "ok": load.ok,
        "errors": call_errors,
        "errors_by_code": dict(load.errors),
        "calls_by_kind": dict(load.by_kind),
        "operations": load.operations,
        "duration_seconds": round(duration, 3),
        "throughput_per_second": round(load.ok / duration, 1),
        "operations_per_second": round(load.operations / duration, 1),
        "latency_ms": _latency(load.latencies_ms),
        "cpu_seconds": {
            "hub": round(hub_seconds, 2),
            "postgres": None if postgres_seconds is None else round(postgres_seconds, 2),
            "load_generator": round(load.cpu_seconds, 2),
        },
    }


def _pgbench_summary(
    outcome: PgbenchResult, postgres_seconds: float, concurrency: int, script: str
) -> dict[str, Any]:
    summary = _baseline_summary(f"pgbench {script} SQL", concurrency, outcome, postgres_seconds)
    return {**summary, "command": " ".join(outcome.command)}


def _sqlite_baseline_summary(outcome: SqliteBaselineResult, workload: str) -> dict[str, Any]:
    """One process, one connection, closed loop: its CPU is SQLite's and the script's."""
    summary = _baseline_summary(
        f"sqlite3 {LOAD_OF_WORKLOAD[workload]} SQL, one process", 1, outcome, None
    )
    # The process is the whole embedded database: its CPU beside the hub's per operation.
    summary["cpu_ms_per_transaction"] = (
        round(outcome.cpu_seconds * 1e3 / outcome.transactions, 3) if outcome.transactions else None
    )
    return summary


def _baseline_summary(
    workload: str,
    concurrency: int,
    outcome: PgbenchResult | SqliteBaselineResult,
    postgres_seconds: float | None,
) -> dict[str, Any]:
    """A baseline's figures in the shape of a hub workload's (`_load_summary`)."""
    duration = max(outcome.duration_seconds, 1e-9)
    return {
        "workload": workload,
        "concurrency": concurrency,
        "requests": outcome.transactions + outcome.errors,
        "ok": outcome.transactions,
        "errors": outcome.errors,
        "operations": outcome.transactions,
        "duration_seconds": round(duration, 3),
        "throughput_per_second": round(outcome.transactions / duration, 1),
        "operations_per_second": round(outcome.transactions / duration, 1),
        "latency_ms": _latency(outcome.latencies_ms),
        "cpu_seconds": {
            "hub": 0.0,
            "postgres": None if postgres_seconds is None else round(postgres_seconds, 2),
            "load_generator": round(outcome.cpu_seconds, 2),
        },
    }


def _latency(latencies_ms: list[float]) -> dict[str, float]:
    if not latencies_ms:
        return {"p50": 0.0, "p99": 0.0, "mean": 0.0, "max": 0.0}
    ordered = sorted(latencies_ms)

    def percentile(fraction: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(fraction * len(ordered)))], 3)

    return {
        "p50": percentile(0.50),
        "p99": percentile(0.99),
        "mean": round(sum(ordered) / len(ordered), 3),
        "max": round(ordered[-1], 3),
    }


def _ratios(results: dict[str, Any]) -> None:
    """Each workload against its own baseline (BASELINE_OF_WORKLOAD); burn also against the
    earn baseline. Hub CPU per operation, in milliseconds, beside them."""
    for name, summary in results["workloads"].items():
        baseline = BASELINE_OF_WORKLOAD[name]
        summary["baseline"] = baseline
        summary["ratio_to_baseline"] = _ratio(summary, results["baselines"].get(baseline))
        if name == "burn":
            summary["ratio_to_earn_baseline"] = _ratio(
                summary, results["baselines"].get("pgbench_earn")
            )
        operations = summary["operations"]
        summary["hub_cpu_ms_per_operation"] = (
            round(summary["cpu_seconds"]["hub"] * 1e3 / operations, 3) if operations else None
        )


def _ratio(summary: dict[str, Any], baseline: dict[str, Any] | None) -> float | None:
    per_second = (baseline or {}).get("operations_per_second") or 0.0
    return round(summary["operations_per_second"] / per_second, 3) if per_second else None


@contextmanager
def _hub(
    url: str, port: int, workers: int, log_path: Path, group_window_ms: float
) -> Iterator[int]:
    """`coalition serve` as a child process, until the block ends; yields its pid."""
    command = [
        sys.executable, "-m", "coalition.cli", "serve", "--db", url,
        "--listen", f"127.0.0.1:{port}", "--workers", str(workers), "--log-format", "json",
        "--group-window-ms", str(group_window_ms),
    ]  # fmt: skip
    environment = {k: v for k, v in os.environ.items() if k != "COALITION_PROGRAMME_DIR"}
    with log_path.open("w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=log, env=environment)
        try:
            _wait_serving(port, process, workers)
            yield process.pid
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=HUB_STOP_SECONDS_MAX)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_serving(port: int, process: subprocess.Popen[bytes], workers: int) -> None:
    deadline = time.monotonic() + HUB_START_SECONDS_MAX
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"the hub exited with {process.returncode} at start")
            try:
                response = stub.Check(health_pb2.HealthCheckRequest(), timeout=1.0)
                if response.status == health_pb2.HealthCheckResponse.SERVING:
                    if workers > 1:
                        time.sleep(1.0)  # let every worker of the port come up
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.2)
    raise RuntimeError(f"the hub did not serve on port {port} within {HUB_START_SECONDS_MAX} s")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


LEDGER_TABLES = (
    "journal_transactions", "postings", "lots", "lot_consumptions", "idempotency_keys", "events",
)  # fmt: skip


def _row_counts(engine: Any) -> dict[str, int]:
    with engine.connect() as connection:
        return {
            table: int(connection.execute(text(f"SELECT COUNT(*) FROM {table}")).scalar_one())
            for table in LEDGER_TABLES
        }


def _machine() -> dict[str, Any]:
    memory_kib = 0
    model = platform.processor()
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_kib = int(line.split()[1])
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "memory_gib": round(memory_kib / 1024 / 1024, 1),
        "python": platform.python_version(),
        "kernel": platform.release(),
    }
