"""Prometheus metrics: RPC latency by method, status and partner; the database pools; job
durations (the scheduled jobs: scheduler/runner.py).

Each hub worker process serves its own `/metrics` (`coalition serve --metrics-listen
HOST:PORT`: worker i listens on PORT + i), so no shared multiprocess directory is needed;
Prometheus scrapes every worker and sums.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import grpc
from prometheus_client import REGISTRY, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import Engine

from coalition.observability.context import CallContext, enter_call, leave_call

logger = logging.getLogger(__name__)
access_logger = logging.getLogger("coalition.access")

# From 0.5 ms (a cached read) to 10 s (a large batch on a loaded machine).
LATENCY_BUCKETS_SECONDS = (
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
JOB_BUCKETS_SECONDS = (0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0, 3600.0)
REQUEST_ID_LENGTH_MAX = 128
# Codes that mean the hub (not the caller) failed: always logged.
SERVER_FAULT_CODES = frozenset({"INTERNAL", "UNKNOWN", "UNAVAILABLE", "DATA_LOSS"})

RPC_LATENCY = Histogram(
    "coalition_rpc_latency_seconds",
    "Server-side latency of hub RPCs; its _count is the number of calls.",
    ["method", "status", "partner"],
    buckets=LATENCY_BUCKETS_SECONDS,
)
JOB_DURATION = Histogram(
    "coalition_job_duration_seconds",
    "Duration of batch jobs (settlement, reconciliation, expiry, tier review...).",
    ["job", "outcome"],
    buckets=JOB_BUCKETS_SECONDS,
)

JOB_LAST_END = Gauge(
    "coalition_job_last_end_timestamp_seconds",
    "When a scheduled job last ended in this process (Unix time), by outcome.",
    ["job", "outcome"],
)


class _PoolCollector(Collector):
    """Connections of every SQLAlchemy pool of this process, by state."""

    def __init__(self) -> None:
        self._engines: weakref.WeakSet[Engine] = weakref.WeakSet()
        self._lock = threading.Lock()

    def watch(self, engine: Engine) -> None:
        with self._lock:
            self._engines.add(engine)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "coalition_db_pool_connections",
            "Database connections of this process's pools, by state.",
            labels=["state"],
        )
        totals = {"checked_out": 0, "idle": 0, "overflow": 0, "size": 0}
        with self._lock:
            engines = list(self._engines)
        for engine in engines:
            pool: Any = engine.pool
            for state, reader in (
                ("checked_out", "checkedout"),
                ("idle", "checkedin"),
                ("overflow", "overflow"),
                ("size", "size"),
            ):
                if hasattr(pool, reader):
                    totals[state] += max(0, int(getattr(pool, reader)()))
        for state, value in totals.items():
            family.add_metric([state], value)
        yield family


_pools = _PoolCollector()
REGISTRY.register(_pools)


def watch_engine_pool(engine: Engine) -> None:
    _pools.watch(engine)


def start_metrics_endpoint(listen: str) -> int:
    """Serve /metrics on HOST:PORT in a daemon thread; returns the port."""
    host, _, port = listen.rpartition(":")
    server, _thread = start_http_server(int(port), addr=host or "0.0.0.0")
    return int(server.server_port)


class MetricsInterceptor(grpc.ServerInterceptor):
    """Outermost interceptor: opens the call context, times the call, records its status.

    The authenticating interceptor runs inside it and names the partner in the context.
    """

    def intercept_service(self, continuation: Any, handler_call_details: Any) -> Any:
        handler = continuation(handler_call_details)
        if handler is None:
            return handler
        method: str = handler_call_details.method
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                self._timed(handler.unary_unary, method),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(
                self._timed(handler.stream_unary, method),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler  # streaming responses: their lifetime is not a latency

    def _timed(self, behavior: Callable[..., Any], method: str) -> Callable[..., Any]:
        short_method = method.rsplit("/", 1)[-1]

        def timed(request: Any, context: grpc.ServicerContext) -> Any:
            call = CallContext(uuid.uuid4().hex[:16], short_method, _request_id(request))
            token = enter_call(call)
            started = time.perf_counter()
            status = "UNKNOWN"
            try:
                response = behavior(request, context)
                code = context.code()
                status = "OK" if code is None else code.name
                return response
            except BaseException:
                code = context.code()
                status = "UNKNOWN" if code is None else code.name
                raise
            finally:
                elapsed_seconds = time.perf_counter() - started
                RPC_LATENCY.labels(short_method, status, call.partner_id).observe(elapsed_seconds)
                _log_call(status, elapsed_seconds)
                leave_call(token)

        return timed


def _request_id(request: Any) -> str:
    value = getattr(request, "request_id", "")
    return value[:REQUEST_ID_LENGTH_MAX] if isinstance(value, str) else ""


def _log_call(status: str, elapsed_seconds: float) -> None:
    if status in SERVER_FAULT_CODES:
        level = logging.WARNING
    elif access_logger.isEnabledFor(logging.INFO):
        level = logging.INFO
    else:
        return
    access_logger.log(
        level, "rpc done", extra={"status": status, "latency_ms": round(elapsed_seconds * 1e3, 3)}
    )
