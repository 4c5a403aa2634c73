"""One bench run: set up the throwaway database, run the pgbench baseline, run the hub under
the same load (unary earn, earn at half its maximum rate, the 80/15/5 mix over two hub
processes on two ports, batch earn), check the ledger invariants, and report."""

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
)
from coalition.store.engine import create_database_engine

HUB_START_SECONDS_MAX = 60.0
HUB_STOP_SECONDS_MAX = 30.0
ALL_WORKLOADS = ("earn", "earn_half_rate", "mix", "batch_earn")
RESULTS_FORMAT_VERSION = 1


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
        "workloads": {},
    }
    started = time.perf_counter()
    url = create_bench_database(config.server_url, config.database_name)
    try:
        database = prepare_bench_database(url, config.members)
        results["setup_seconds"] = round(time.perf_counter() - started, 3)
        progress(f"database ready in {results['setup_seconds']} s; running the pgbench baseline")
        results["baseline"] = _baseline(config, url)
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
    results["load_average_after"] = list(cpu.load_average())
    _ratios(results)
    return results


def _baseline(config: BenchConfig, url: str) -> dict[str, Any]:
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
        )
        postgres_seconds = cpu.postgres_cpu_seconds() - postgres_before
    return _pgbench_summary(outcome, postgres_seconds, config.concurrency)


def _hub_workloads(
    config: BenchConfig,
    url: str,
    api_keys: dict[str, str],
    directory: Path,
    results: dict[str, Any],
    progress: Any,
) -> None:
    unary = [w for w in config.workloads if w != "mix"]
    if unary:
        port = _free_port()
        with _hub(url, port, config.hub_workers, directory / "hub.log") as pid:
            for workload in unary:
                spec = _spec(config, workload, (f"127.0.0.1:{port}",), api_keys, results)
                progress(f"workload {workload}: {spec.requests} calls")
                results["workloads"][workload] = _measured(spec, [pid], config.concurrency)
    if "mix" in config.workloads:
        ports = (_free_port(), _free_port())
        with (
            _hub(url, ports[0], 1, directory / "hub-a.log") as first_pid,
            _hub(url, ports[1], 1, directory / "hub-b.log") as second_pid,
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
        workload="batch_earn" if batch else "earn" if workload.startswith("earn") else workload,
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


def _measured(spec: LoadSpec, hub_pids: list[int], concurrency: int) -> dict[str, Any]:
    hub_before = sum(cpu.tree_cpu_seconds(pid) for pid in hub_pids)
    postgres_before = cpu.postgres_cpu_seconds()
    load = run_load(spec)
    hub_seconds = sum(cpu.tree_cpu_seconds(pid) for pid in hub_pids) - hub_before
    postgres_seconds = cpu.postgres_cpu_seconds() - postgres_before
    return _load_summary(spec, load, hub_seconds, postgres_seconds)


def _load_summary(
    spec: LoadSpec, load: LoadResult, hub_seconds: float, postgres_seconds: float
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
            "postgres": round(postgres_seconds, 2),
            "load_generator": round(load.cpu_seconds, 2),
        },
    }


def _pgbench_summary(
    outcome: PgbenchResult, postgres_seconds: float, concurrency: int
) -> dict[str, Any]:
    duration = max(outcome.duration_seconds, 1e-9)
    return {
        "workload": "pgbench earn SQL",
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
            "postgres": round(postgres_seconds, 2),
            "load_generator": round(outcome.cpu_seconds, 2),
        },
        "command": " ".join(outcome.command),
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
    baseline = results.get("baseline", {}).get("operations_per_second") or 0.0
    for summary in results["workloads"].values():
        summary["ratio_to_baseline"] = (
            round(summary["operations_per_second"] / baseline, 3) if baseline else None
        )


@contextmanager
def _hub(url: str, port: int, workers: int, log_path: Path) -> Iterator[int]:
    """`coalition serve` as a child process, until the block ends; yields its pid."""
    command = [
        sys.executable, "-m", "coalition.cli", "serve", "--db", url,
        "--listen", f"127.0.0.1:{port}", "--workers", str(workers), "--log-format", "json",
    ]  # fmt: skip
    environment = {k: v for k, v in os.environ.items() if k != "COALITION_PROGRAMME_DIR"}
    with log_path.open("w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=log, env=environment)
        try:
            _wait_serving(port, process)
            yield process.pid
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=HUB_STOP_SECONDS_MAX)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_serving(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + HUB_START_SECONDS_MAX
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"the hub exited with {process.returncode} at start")
            try:
                response = stub.Check(health_pb2.HealthCheckRequest(), timeout=1.0)
                if response.status == health_pb2.HealthCheckResponse.SERVING:
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


def _row_counts(engine: Any) -> dict[str, int]:
    with engine.connect() as connection:
        return {
            table: int(connection.execute(text(f"SELECT COUNT(*) FROM {table}")).scalar_one())
            for table in ("journal_transactions", "postings", "lots", "idempotency_keys", "events")
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
