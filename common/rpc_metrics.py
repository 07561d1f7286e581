"""RED metrics for every gRPC method a service hosts: rate, errors by status code, duration.

One server interceptor (outermost, so refusals by the context and auth interceptors are
counted too) records per method: requests by final status code, handling time (a streaming
RPC's whole lifetime), time to the first response message of a server stream, and streams in
flight. Labels are the service and method names the server registered, the RPC type and the
status code: bounded, never a tenant or call id.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import grpc.aio
from prometheus_client import Counter, Gauge, Histogram

from common.telemetry import UNTRACED_PREFIXES

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800)

REQUESTS = Counter(
    "voiceai_rpc_server_handled_total",
    "RPCs completed by the server, by final gRPC status code",
    ["grpc_service", "grpc_method", "grpc_type", "grpc_code"],
)
DURATION = Histogram(
    "voiceai_rpc_server_handling_seconds",
    "Time from an RPC's start to its status (a stream's lifetime)",
    ["grpc_service", "grpc_method", "grpc_type"],
    buckets=_LATENCY_BUCKETS,
)
FIRST_RESPONSE = Histogram(
    "voiceai_rpc_server_first_response_seconds",
    "Time from a server-streaming RPC's start to its first response message",
    ["grpc_service", "grpc_method"],
    buckets=_LATENCY_BUCKETS,
)
IN_FLIGHT = Gauge(
    "voiceai_rpc_server_in_flight",
    "RPCs being handled now (open streams included)",
    ["grpc_service", "grpc_method"],
)

SERVING = Gauge("voiceai_serving", "1 while this process reports SERVING (ready for new work), else 0")
DRAIN_STARTED = Gauge(
    "voiceai_drain_started_timestamp_seconds", "When this process began draining (0 = not draining)"
)

_KINDS = {
    (False, False): ("unary", grpc.unary_unary_rpc_method_handler),
    (False, True): ("server_stream", grpc.unary_stream_rpc_method_handler),
    (True, False): ("client_stream", grpc.stream_unary_rpc_method_handler),
    (True, True): ("bidi_stream", grpc.stream_stream_rpc_method_handler),
}


def split_method(full: str) -> tuple[str, str]:
    """'/pkg.Service/Method' -> ('pkg.Service', 'Method')."""
    service, _, method = full.lstrip("/").rpartition("/")
    return service or "unknown", method or "unknown"


def _code_of(sctx: grpc.aio.ServicerContext, error: BaseException | None) -> str:
    code = None
    try:
        code = sctx.code()
    except Exception:
        code = None
    if isinstance(code, grpc.StatusCode):
        return code.name
    if isinstance(code, int):
        for status in grpc.StatusCode:
            if status.value[0] == code:
                return status.name
    if error is None:
        return "OK"
    if isinstance(error, BaseException) and type(error).__name__ == "CancelledError":
        return "CANCELLED"
    return "UNKNOWN"


class _Series:
    """The label-bound children for one method, resolved once per method, not per RPC."""

    __slots__ = ("codes", "duration", "first", "in_flight", "labels")

    def __init__(self, service: str, method: str, kind: str) -> None:
        self.labels = (service, method, kind)
        self.duration = DURATION.labels(service, method, kind)
        self.first = FIRST_RESPONSE.labels(service, method)
        self.in_flight = IN_FLIGHT.labels(service, method)
        self.codes: dict[str, Any] = {}

    def done(self, code: str, started: float) -> None:
        counter = self.codes.get(code)
        if counter is None:
            counter = self.codes[code] = REQUESTS.labels(*self.labels, code)
        counter.inc()
        self.duration.observe(time.perf_counter() - started)
        self.in_flight.dec()


class RedServerInterceptor(grpc.aio.ServerInterceptor):
    """Counts, times and status-codes every RPC but health checks and reflection."""

    def __init__(self) -> None:
        self._series: dict[str, _Series] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or method.startswith(UNTRACED_PREFIXES):
            return handler
        kind, make = _KINDS[(handler.request_streaming, handler.response_streaming)]
        series = self._series.get(method)
        if series is None:
            series = self._series[method] = _Series(*split_method(method), kind)
        inner = handler.stream_stream or handler.unary_stream or handler.stream_unary or handler.unary_unary
        behavior = _streaming(inner, series) if handler.response_streaming else _unary(inner, series)
        return make(
            behavior,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


def _unary(inner: Callable[..., Any], series: _Series) -> Callable[..., Any]:
    async def behavior(request: Any, sctx: grpc.aio.ServicerContext) -> Any:
        started = time.perf_counter()
        series.in_flight.inc()
        error: BaseException | None = None
        try:
            return await inner(request, sctx)
        except BaseException as e:
            error = e
            raise
        finally:
            series.done(_code_of(sctx, error), started)

    return behavior


def _streaming(inner: Callable[..., Any], series: _Series) -> Callable[..., Any]:
    if not inspect.isasyncgenfunction(inner):
        # A handler that writes with ``context.write``: time it as a whole.
        return _unary(inner, series)

    async def behavior(request: Any, sctx: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        started = time.perf_counter()
        series.in_flight.inc()
        error: BaseException | None = None
        first = True
        try:
            async for response in inner(request, sctx):
                if first:
                    first = False
                    series.first.observe(time.perf_counter() - started)
                yield response
        except BaseException as e:
            error = e
            raise
        finally:
            series.done(_code_of(sctx, error), started)

    return behavior
