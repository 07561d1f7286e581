"""Structured logs that carry the tenant and call ids of the work being logged.

Only ids go into logs: never transcripts, prompts or other tenant data.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable

from common import context

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


# Installed by common.telemetry when tracing is on: (trace_id, span_id) of the active span.
class _Hooks:
    trace_ids: Callable[[], tuple[str, str] | None] | None = None


_hooks = _Hooks()


def set_trace_ids_source(source: Callable[[], tuple[str, str] | None] | None) -> None:
    """Where log lines read the active span's ids (``common.telemetry``)."""
    _hooks.trace_ids = source


class _ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        ctx = context.current()
        record.tenant_id = ctx.tenant_id if ctx else "-"
        record.call_id = ctx.call_id if ctx else "-"
        source = _hooks.trace_ids
        if source is not None and (ids := source()) is not None:
            record.trace_id, record.span_id = ids
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, ids, and any ``extra`` fields."""

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": round(record.created, 3),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


class ConsoleFormatter(logging.Formatter):
    """Readable single lines for a terminal: time, level, service, ids, message."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self._service = service

    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%H:%M:%S", time.localtime(record.created))
        ms = int(record.msecs)
        ids = ""
        tenant = getattr(record, "tenant_id", "-")
        if tenant != "-":
            ids = f" [{tenant}/{getattr(record, 'call_id', '-')[:12]}]"
        line = f"{ts}.{ms:03d} {record.levelname[0]} {self._service:<7}{ids} {record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def configure(service: str, level: str = "INFO", fmt: str = "console") -> None:
    """Install the root handler once per process."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_ContextFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else ConsoleFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("faster_whisper", "piper", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # Never DEBUG for grpc's own loggers: its Cython callbacks log while holding grpc locks, and a
    # collection in another thread that is inside a handler (holding its lock) can finalize grpc
    # objects that need those locks: a lock-order deadlock seen with VOICEAI_LOG_LEVEL=DEBUG.
    logging.getLogger("grpc").setLevel(max(logging.INFO, root.level))
