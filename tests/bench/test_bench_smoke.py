"""A tiny run of `coalition bench` with every workload but earn_half_rate, on PostgreSQL and on
a SQLite file: the output is well formed, its counts add up, and every ledger invariant holds
on both databases afterwards. Nothing here asserts a duration or a throughput."""

from __future__ import annotations

import argparse
import json
import uuid

import pytest
from sqlalchemy.engine import make_url

from coalition.bench.command import add_bench_parser, run
from coalition.bench.harness import BASELINE_OF_WORKLOAD, SQLITE_WORKLOADS
from coalition.store.engine import normalise_database_url
from tests.conftest import POSTGRES_URL

pytestmark = pytest.mark.bench

WORKLOADS = ("earn", "burn", "mix", "batch_earn", "sqlite_earn", "sqlite_burn")
MEMBERS = 300
REQUESTS = 200
BATCH_SIZE = 50
DATABASE_NAME = f"coalition_bench_{uuid.uuid4().hex[:8]}"


def test_a_small_bench_run_reports_consistent_counts(tmp_path, capsys) -> None:
    parser = argparse.ArgumentParser()
    add_bench_parser(parser.add_subparsers(dest="command"))
    out = tmp_path / "results.json"
    server = make_url(normalise_database_url(POSTGRES_URL)).render_as_string(hide_password=False)
    arguments = parser.parse_args(
        [
            "bench", "--server", server, "--database-name", DATABASE_NAME,
            "--members", str(MEMBERS), "--requests", str(REQUESTS), "--batch-calls", "2",
            "--batch-size", str(BATCH_SIZE), "--concurrency", "4", "--generator-processes", "2",
            "--hub-workers", "1", "--duration", "60", "--workloads", ",".join(WORKLOADS),
            "--out", str(out),
        ]
    )  # fmt: skip
    assert run(arguments) == 0
    results = json.loads(out.read_text())
    printed = capsys.readouterr().out
    assert "| baseline pgbench_earn |" in printed
    assert "| baseline sqlite_burn |" in printed
    assert "ledger invariant violations after the run (SQLite): 0" in printed

    baselines = results["baselines"]
    assert set(baselines) == {"pgbench_earn", "pgbench_burn", "sqlite_earn", "sqlite_burn"}
    assert results["baseline"] == baselines["pgbench_earn"]
    for name, baseline in baselines.items():
        # Every transaction of every baseline commits: no member runs dry, none is refused.
        assert baseline["ok"] == baseline["requests"] == REQUESTS, name
        assert baseline["errors"] == 0, name
    assert set(results["workloads"]) == set(WORKLOADS)
    for name, summary in results["workloads"].items():
        assert summary["ok"] + summary["errors"] == summary["requests"], name
        assert sum(summary["errors_by_code"].values()) >= summary["errors"]
        assert sum(summary["calls_by_kind"].values()) == summary["ok"]
        latency = summary["latency_ms"]
        assert 0 <= latency["p50"] <= latency["p99"] <= latency["max"]
        assert set(summary["cpu_seconds"]) == {"hub", "postgres", "load_generator"}
        by_process = summary["hub_cpu_seconds_by_process"]
        assert by_process == sorted(by_process, reverse=True) and by_process, name
        assert sum(by_process) <= summary["cpu_seconds"]["hub"] + 0.01 * len(by_process), name
        if name in SQLITE_WORKLOADS:  # one hub process, its tree nothing else
            assert by_process == [pytest.approx(summary["cpu_seconds"]["hub"], abs=0.01)]
        assert (summary["cpu_seconds"]["postgres"] is None) == (name in SQLITE_WORKLOADS)
        assert summary["baseline"] == BASELINE_OF_WORKLOAD[name]
        assert summary["ratio_to_baseline"] == pytest.approx(
            summary["operations_per_second"]
            / baselines[summary["baseline"]]["operations_per_second"],
            abs=1e-3,
        )
    for name in ("earn", "burn", "sqlite_earn", "sqlite_burn"):
        summary = results["workloads"][name]
        assert summary["ok"] == summary["operations"] == REQUESTS, (name, summary["errors_by_code"])
        kind = name.removeprefix("sqlite_")
        assert summary["calls_by_kind"] == {kind: REQUESTS}, name
    assert results["workloads"]["burn"]["ratio_to_earn_baseline"] > 0
    batch = results["workloads"]["batch_earn"]
    assert batch["operations"] == batch["ok"] * BATCH_SIZE
    mix = results["workloads"]["mix"]
    assert len(mix["hub_processes"]) == 2
    assert set(mix["calls_by_kind"]) <= {"earn", "burn", "reverse"}

    # Rows written add up on each database: seed earns, baselines' transactions, operations.
    on_sqlite = set(SQLITE_WORKLOADS)
    for rows, violations, workloads, baseline_names in (
        (
            results["ledger_rows"],
            results["invariant_violations"],
            set(WORKLOADS) - on_sqlite,
            ("pgbench_earn", "pgbench_burn"),
        ),
        (
            results["sqlite"]["ledger_rows"],
            results["sqlite"]["invariant_violations"],
            set(WORKLOADS) & on_sqlite,
            ("sqlite_earn", "sqlite_burn"),
        ),
    ):
        applied = sum(baselines[b]["ok"] for b in baseline_names)
        applied += sum(results["workloads"][w]["operations"] for w in workloads)
        assert rows["journal_transactions"] == MEMBERS + applied
        assert rows["postings"] == 2 * rows["journal_transactions"]
        # Every burn consumed at least one lot (burns of the mix included).
        burns = baselines[baseline_names[1]]["ok"] + sum(
            results["workloads"][w]["calls_by_kind"].get("burn", 0) for w in workloads
        )
        assert rows["lot_consumptions"] >= burns > 0
        assert {"postings_sum_to_zero", "lot_remainders_match_balances"} <= violations.keys()
        assert violations == dict.fromkeys(violations, 0)
