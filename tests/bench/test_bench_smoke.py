"""A tiny run of `coalition bench`: the output is well formed and its counts add up. Nothing
here asserts a duration or a throughput."""

from __future__ import annotations

import argparse
import json
import uuid

import pytest
from sqlalchemy.engine import make_url

from coalition.bench.command import add_bench_parser, run
from coalition.store.engine import normalise_database_url
from tests.conftest import POSTGRES_URL

pytestmark = pytest.mark.end_to_end

WORKLOADS = ("earn", "mix", "batch_earn")
DATABASE_NAME = f"coalition_bench_{uuid.uuid4().hex[:8]}"


def test_a_small_bench_run_reports_consistent_counts(tmp_path, capsys) -> None:
    parser = argparse.ArgumentParser()
    add_bench_parser(parser.add_subparsers(dest="command"))
    out = tmp_path / "results.json"
    server = make_url(normalise_database_url(POSTGRES_URL)).render_as_string(hide_password=False)
    arguments = parser.parse_args(
        [
            "bench", "--server", server, "--database-name", DATABASE_NAME,
            "--members", "300", "--requests", "200", "--batch-calls", "2", "--batch-size", "50",
            "--concurrency", "4", "--generator-processes", "2", "--hub-workers", "1",
            "--duration", "60", "--workloads", ",".join(WORKLOADS), "--out", str(out),
        ]
    )  # fmt: skip
    assert run(arguments) == 0
    results = json.loads(out.read_text())
    assert "| baseline (pgbench) |" in capsys.readouterr().out

    baseline = results["baseline"]
    assert baseline["ok"] + baseline["errors"] == baseline["requests"] == 200
    assert set(results["workloads"]) == set(WORKLOADS)
    for name, summary in results["workloads"].items():
        assert summary["ok"] + summary["errors"] == summary["requests"], name
        assert sum(summary["errors_by_code"].values()) >= summary["errors"]
        assert sum(summary["calls_by_kind"].values()) == summary["ok"]
        latency = summary["latency_ms"]
        assert 0 <= latency["p50"] <= latency["p99"] <= latency["max"]
        assert set(summary["cpu_seconds"]) == {"hub", "postgres", "load_generator"}
        assert summary["ratio_to_baseline"] is None or summary["ratio_to_baseline"] >= 0
    assert results["workloads"]["earn"]["requests"] == 200
    batch = results["workloads"]["batch_earn"]
    assert batch["operations"] == batch["ok"] * 50
    mix = results["workloads"]["mix"]
    assert len(mix["hub_processes"]) == 2
    assert set(mix["calls_by_kind"]) <= {"earn", "burn", "reverse"}
    # Rows written add up: seed earns, baseline transactions, applied operations.
    applied = baseline["ok"] + sum(s["operations"] for s in results["workloads"].values())
    rows = results["ledger_rows"]
    assert rows["journal_transactions"] == 300 + applied
    assert rows["postings"] == 2 * rows["journal_transactions"]
    violations = results["invariant_violations"]
    assert {"postings_sum_to_zero", "statements_verify"} <= violations.keys(), violations
    assert violations == dict.fromkeys(violations, 0)
