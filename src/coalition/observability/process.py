"""Observability of one hub process, configured from the environment so that worker
processes started with `spawn` (which inherit the environment, not the parent's objects) set
themselves up the same way as a single-process hub.

COALITION_METRICS_LISTEN=HOST:PORT  serve /metrics; each worker takes the first free port
                                    from PORT up (worker i of N: PORT + i when all start).
COALITION_LOG_FORMAT=json|text      log lines on stderr (default text).
COALITION_ACCESS_LOG=1              one log line per RPC (else only server-side failures).
"""

from __future__ import annotations

import argparse
import logging
import os

from coalition.observability.logs import configure_logging
from coalition.observability.metrics import start_metrics_endpoint

METRICS_LISTEN_VARIABLE = "COALITION_METRICS_LISTEN"
LOG_FORMAT_VARIABLE = "COALITION_LOG_FORMAT"
ACCESS_LOG_VARIABLE = "COALITION_ACCESS_LOG"
METRICS_PORTS_TRIED_MAX = 64

logger = logging.getLogger(__name__)


def configure_process() -> int | None:
    """Logging and the metrics endpoint of this process; returns the metrics port, if any."""
    log_format = os.environ.get(LOG_FORMAT_VARIABLE)
    if log_format:
        configure_logging(
            logging.INFO,
            json_lines=log_format == "json",
            access_log=os.environ.get(ACCESS_LOG_VARIABLE) == "1",
        )
    listen = os.environ.get(METRICS_LISTEN_VARIABLE)
    if not listen:
        return None
    host, _, first_port = listen.rpartition(":")
    for port in range(int(first_port), int(first_port) + METRICS_PORTS_TRIED_MAX):
        try:
            bound_port = start_metrics_endpoint(f"{host}:{port}")
        except OSError:
            continue
        logger.info("metrics on http://%s:%d/metrics", host, bound_port)
        return bound_port
    raise OSError(f"no free metrics port from {listen}")


def export_serve_options(arguments: argparse.Namespace) -> None:
    """Put the options where spawned workers find them, and apply them to this process."""
    if arguments.metrics_listen:
        os.environ[METRICS_LISTEN_VARIABLE] = arguments.metrics_listen
    os.environ[LOG_FORMAT_VARIABLE] = arguments.log_format
    os.environ[ACCESS_LOG_VARIABLE] = "1" if arguments.access_log else "0"
    if arguments.workers > 1:  # the parent serves no RPC: only its log format applies
        configure_logging(logging.INFO, arguments.log_format == "json", arguments.access_log)
