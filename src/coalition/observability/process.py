"""Observability of one hub process: its log lines and its /metrics endpoint, from the
settings `coalition serve` hands every worker (settings.Observability):

--metrics-listen HOST:PORT  serve /metrics; each worker takes the first free port from PORT up
                            (worker i of N: PORT + i when all start).
--log-format json|text      log lines on stderr (default text).
--access-log                one log line per RPC (else only server-side failures).
"""

from __future__ import annotations

import logging

from coalition.observability.logs import configure_logging
from coalition.observability.metrics import start_metrics_endpoint
from coalition.settings import Observability

METRICS_PORTS_TRIED_MAX = 64

logger = logging.getLogger(__name__)


def configure_logs(observability: Observability) -> None:
    configure_logging(
        logging.INFO,
        json_lines=observability.log_format == "json",
        access_log=observability.access_log,
    )


def configure_process(observability: Observability) -> int | None:
    """Logging and the metrics endpoint of this process; returns the metrics port, if any."""
    configure_logs(observability)
    listen = observability.metrics_listen
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
