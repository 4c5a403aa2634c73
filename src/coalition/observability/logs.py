"""Structured logs: one JSON object per line, carrying the call's ids.

Fields: time (UTC, ISO 8601), level, logger, message, and inside an RPC call_id, method,
partner and request_id; `status` and `latency_ms` on access lines. Credentials never reach a
log line (the interceptors never log metadata), nor do member identifiers or contact data.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

from coalition.observability.context import current_call

EXTRA_FIELDS = ("status", "latency_ms")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        call = current_call()
        if call is not None:
            line.update(
                call_id=call.call_id,
                method=call.method,
                partner=call.partner_id,
                request_id=call.request_id,
            )
        for name in EXTRA_FIELDS:
            if hasattr(record, name):
                line[name] = getattr(record, name)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, separators=(",", ":"))


def configure_logging(level: int, json_lines: bool, access_log: bool) -> None:
    """Root logging for a hub process: JSON lines (or text) on stderr."""
    handler = logging.StreamHandler(sys.stderr)
    if json_lines:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("coalition.access").setLevel(logging.INFO if access_log else logging.WARNING)
