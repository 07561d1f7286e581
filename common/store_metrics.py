"""Latency of the stores on a request's path (PostgreSQL statements, Redis commands, a Consul
lookup a caller waits on), as a histogram per store and operation and, when tracing is on, a
client span each.

Operations are fixed names ("quota_acquire", "SELECT"): bounded labels, never a key, a tenant or
a statement's parameters.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from prometheus_client import Histogram

from common import telemetry

STORE_SECONDS = Histogram(
    "voiceai_store_operation_seconds",
    "Time of one database statement or Redis command, by store and operation",
    ["store", "operation", "outcome"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)

_SYSTEMS = {"postgresql": "postgresql", "redis": "redis"}


@contextmanager
def timed(store: str, operation: str, statement: str = "") -> Iterator[None]:
    """Time the block as one ``store`` ``operation``; a span ``<store>.<operation>`` when tracing."""
    span: Any = None
    if telemetry.enabled():
        from opentelemetry.trace import SpanKind

        attributes = {"db.system": _SYSTEMS.get(store, store), "db.operation": operation}
        if statement:
            attributes["db.statement"] = statement[:300]
        span = telemetry.tracer("voiceai.store").start_span(
            f"{store}.{operation}", kind=SpanKind.CLIENT, attributes=attributes
        )
    started = time.perf_counter()
    outcome = "ok"
    try:
        if span is None:
            yield
        else:
            from opentelemetry import trace

            with trace.use_span(span, end_on_exit=False, record_exception=True, set_status_on_exception=True):
                yield
    except BaseException:
        outcome = "error"
        raise
    finally:
        STORE_SECONDS.labels(store, operation, outcome).observe(time.perf_counter() - started)
        if span is not None:
            span.end()


def sql_operation(query: str) -> str:
    """The statement's verb (SELECT, INSERT...), a bounded label."""
    head = query.lstrip().split(None, 1)
    verb = head[0].upper() if head else "?"
    return verb if verb in {"SELECT", "INSERT", "UPDATE", "DELETE", "WITH", "LOCK"} else "OTHER"


class PoolCollector:
    """Connection pool gauges read at scrape time from each watched pool's ``get_stats()``
    (psycopg_pool): nothing on the request path. One collector for the process; pools come and
    go with their hosts."""

    _GAUGES = (
        ("pool_size", "voiceai_db_pool_connections", "Connections the pool holds"),
        ("pool_available", "voiceai_db_pool_idle_connections", "Connections idle in the pool"),
        ("pool_max", "voiceai_db_pool_max_connections", "The pool's maximum size"),
        ("requests_waiting", "voiceai_db_pool_waiting_requests", "Requests waiting for a connection"),
    )
    _COUNTERS = (
        ("requests_num", "voiceai_db_pool_requests", "Connections requested from the pool"),
        ("requests_wait_ms", "voiceai_db_pool_wait_milliseconds", "Time requests waited for a connection"),
        ("requests_errors", "voiceai_db_pool_request_errors", "Requests the pool could not serve in time"),
    )

    def __init__(self) -> None:
        self._pools: dict[int, Any] = {}

    def watch(self, pool: Any) -> None:
        """Report ``pool`` until ``forget``."""
        self._pools[id(pool)] = pool

    def forget(self, pool: Any) -> None:
        """Stop reporting ``pool`` (it closed)."""
        self._pools.pop(id(pool), None)

    def collect(self) -> Iterator[Any]:
        """Prometheus collector protocol: the sums over every watched pool."""
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        totals: dict[str, int] = {}
        for pool in list(self._pools.values()):
            stats = pool.get_stats()
            for key, value in stats.items():
                totals[key] = totals.get(key, 0) + int(value)
        for key, name, doc in self._GAUGES:
            yield GaugeMetricFamily(name, doc, value=totals.get(key, 0))
        for key, name, doc in self._COUNTERS:
            yield CounterMetricFamily(name, doc, value=totals.get(key, 0))


POOLS = PoolCollector()


def _register() -> None:
    from prometheus_client import REGISTRY

    REGISTRY.register(POOLS)


_register()
