"""`coalition bench`: the command line of the benchmark harness."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from coalition.bench.harness import ALL_WORKLOADS, BenchConfig, run_bench
from coalition.bench.report import table


def add_bench_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    defaults = BenchConfig()
    bench = commands.add_parser(
        "bench",
        help="the hub against same-shape baselines: pgbench on the same PostgreSQL, sqlite3 "
        "in one process on the same SQLite file",
    )
    bench.add_argument(
        "--server",
        default=defaults.server_url,
        help="PostgreSQL server URL (any database on it); the bench creates its own database",
    )
    bench.add_argument("--database-name", default=defaults.database_name)
    bench.add_argument("--members", type=int, default=defaults.members)
    bench.add_argument("--requests", type=int, default=defaults.requests)
    bench.add_argument("--batch-calls", type=int, default=defaults.batch_calls)
    bench.add_argument("--batch-size", type=int, default=defaults.batch_size)
    bench.add_argument("--concurrency", type=int, default=defaults.concurrency)
    bench.add_argument("--generator-processes", type=int, default=defaults.generator_processes)
    bench.add_argument(
        "--hub-workers",
        type=int,
        default=defaults.hub_workers,
        help="hub processes of the PostgreSQL workloads (the SQLite ones run one)",
    )
    bench.add_argument(
        "--group-window-ms",
        type=float,
        default=defaults.group_window_ms,
        help="the hubs' `serve --group-window-ms` (default: none)",
    )
    bench.add_argument(
        "--duration", type=float, default=defaults.duration_seconds_max, help="seconds max each"
    )
    bench.add_argument(
        "--workloads", default=",".join(ALL_WORKLOADS), help=f"of {','.join(ALL_WORKLOADS)}"
    )
    bench.add_argument(
        "--keep-database",
        action="store_true",
        help="keep the PostgreSQL database, and the SQLite file in the working directory",
    )
    bench.add_argument("--out", default=None, help="write the results as JSON to FILE")


def run(arguments: argparse.Namespace) -> int:
    workloads = tuple(w for w in arguments.workloads.split(",") if w)
    unknown = sorted(set(workloads) - set(ALL_WORKLOADS))
    if unknown:
        raise RuntimeError(f"unknown workloads: {', '.join(unknown)}")
    if "earn_half_rate" in workloads and "earn" not in workloads:
        raise RuntimeError("earn_half_rate needs earn (it runs at half its throughput)")
    config = BenchConfig(
        server_url=arguments.server,
        database_name=arguments.database_name,
        members=arguments.members,
        requests=arguments.requests,
        batch_calls=arguments.batch_calls,
        batch_size=arguments.batch_size,
        concurrency=arguments.concurrency,
        generator_processes=arguments.generator_processes,
        hub_workers=arguments.hub_workers,
        group_window_ms=arguments.group_window_ms,
        duration_seconds_max=arguments.duration,
        workloads=workloads,
        keep_database=arguments.keep_database,
    )
    results = run_bench(config, progress=lambda line: print(line, file=sys.stderr))
    if arguments.out:
        Path(arguments.out).write_text(json.dumps(results, indent=2) + "\n")
    print(table(results))
    return 0
