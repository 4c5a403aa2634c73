"""The results as the Markdown table of docs/benchmarks.md."""

from __future__ import annotations

from typing import Any

COLUMNS = (
    "workload", "ops/s", "x baseline", "p50 ms", "p99 ms", "errors",
    "CPU s hub", "CPU s postgres", "CPU s loadgen",
)  # fmt: skip


def table(results: dict[str, Any]) -> str:
    rows = [("baseline (pgbench)", results["baseline"])]
    rows += list(results["workloads"].items())
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for name, summary in rows:
        ratio = summary.get("ratio_to_baseline")
        cells = [
            name,
            f"{summary['operations_per_second']:.0f}",
            "1.00" if name.startswith("baseline") else f"{ratio:.2f}" if ratio else "-",
            f"{summary['latency_ms']['p50']:.1f}",
            f"{summary['latency_ms']['p99']:.1f}",
            str(summary["errors"]),
            f"{summary['cpu_seconds']['hub']:.1f}",
            f"{summary['cpu_seconds']['postgres']:.1f}",
            f"{summary['cpu_seconds']['load_generator']:.1f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    violations = sum(results.get("invariant_violations", {}).values())
    lines.append("")
    lines.append(f"ledger invariant violations after the run: {violations}")
    return "\n".join(lines)
