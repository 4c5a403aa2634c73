"""The results as the Markdown table of docs/benchmarks.md."""

from __future__ import annotations

from typing import Any

COLUMNS = (
    "workload", "against", "ops/s", "x baseline", "p50 ms", "p99 ms", "errors",
    "CPU s hub", "hub CPU ms/op", "CPU s postgres", "CPU s loadgen",
)  # fmt: skip


def table(results: dict[str, Any]) -> str:
    """Baselines first (each its own 1.00), then the workloads, each against its baseline;
    then the invariant violations of each database the run used."""
    rows = [(f"baseline {name}", summary) for name, summary in results["baselines"].items()]
    rows += list(results["workloads"].items())
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for name, summary in rows:
        is_baseline = name.startswith("baseline ")
        ratio = summary.get("ratio_to_baseline")
        per_operation = summary.get("hub_cpu_ms_per_operation")
        postgres = summary["cpu_seconds"]["postgres"]
        cells = [
            name,
            "-" if is_baseline else summary["baseline"],
            f"{summary['operations_per_second']:.0f}",
            "1.00" if is_baseline else f"{ratio:.2f}" if ratio is not None else "-",
            f"{summary['latency_ms']['p50']:.1f}",
            f"{summary['latency_ms']['p99']:.1f}",
            str(summary["errors"]),
            f"{summary['cpu_seconds']['hub']:.1f}",
            "-" if per_operation is None else f"{per_operation:.2f}",
            "-" if postgres is None else f"{postgres:.1f}",
            f"{summary['cpu_seconds']['load_generator']:.1f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    burn = results["workloads"].get("burn", {}).get("ratio_to_earn_baseline")
    lines.append("")
    for name, summary in results["workloads"].items():
        by_process = summary.get("hub_cpu_seconds_by_process", [])
        if len(by_process) > 1:  # how the clients' connections split over the workers
            seconds = ", ".join(f"{value:.1f}" for value in by_process)
            lines.append(f"hub CPU s by process ({name}): {seconds}")
    if burn is not None:
        lines.append(f"burn against the pgbench earn baseline: {burn:.2f}x")
    for database, violations in (
        ("PostgreSQL", results.get("invariant_violations")),
        ("SQLite", results.get("sqlite", {}).get("invariant_violations")),
    ):
        if violations is not None:
            lines.append(
                f"ledger invariant violations after the run ({database}): "
                f"{sum(violations.values())}"
            )
    return "\n".join(lines)
