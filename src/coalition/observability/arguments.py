"""The observability options of `coalition serve` (applied by observability/process.py);
they load neither the metrics nor the logging code."""

from __future__ import annotations

import argparse


def add_serve_options(serve: argparse.ArgumentParser) -> None:
    serve.add_argument(
        "--metrics-listen",
        default=None,
        metavar="HOST:PORT",
        help="serve Prometheus /metrics; worker i of --workers N takes PORT + i",
    )
    serve.add_argument(
        "--log-format", choices=["text", "json"], default="text", help="log line format"
    )
    serve.add_argument(
        "--access-log", action="store_true", help="log every RPC (method, status, latency)"
    )
