"""What a service is doing right now, and readiness that follows it: overload sheds.

``LoadInterceptor`` (every ``ServiceHost`` has one, ``host.load``) counts the RPCs in flight.
With ``VOICEAI_MAX_STREAMS`` set, ``attach_capacity`` makes the host NOT_SERVING for new work
while that many are open (at once, not at the next readiness poll) and SERVING again when one
ends; Consul's check and the gateway's admission (``gateway.admission.require_capacity``) then
send new calls elsewhere or refuse them with a retry hint, while the streams of calls already
admitted (their next turns too) are still served.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import grpc.aio
from prometheus_client import Gauge
from pydantic_settings import BaseSettings, SettingsConfigDict

from common.interceptors import EXEMPT_PREFIXES, _inner, _rebuild

IN_FLIGHT = Gauge("voiceai_rpcs_in_flight", "RPCs in flight on this process (health and reflection excluded)")


class CapacitySettings(BaseSettings):
    """How much concurrent work a service takes before it says it is full (env prefix VOICEAI_)."""

    model_config = SettingsConfigDict(env_prefix="VOICEAI_", extra="ignore")

    # Streams/RPCs in flight at which readiness turns NOT_SERVING (0 = never): size it to what
    # the engines sustain at the latency callers expect (make bench shows where that is).
    max_streams: int = 0


class LoadInterceptor(grpc.aio.ServerInterceptor):
    """Counts RPCs in flight; ``on_change`` runs (sync, cheap) whenever the count moves."""

    def __init__(self) -> None:
        self.in_flight = 0
        self.on_change: Callable[[int], None] | None = None

    def _moved(self, delta: int) -> None:
        self.in_flight += delta
        IN_FLIGHT.inc(delta)
        if self.on_change is not None:
            self.on_change(self.in_flight)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        """Wraps the handler so the count covers its whole run."""
        handler = await continuation(handler_call_details)
        if handler is None or handler_call_details.method.startswith(EXEMPT_PREFIXES):
            return handler
        inner = _inner(handler)
        if handler.response_streaming:

            async def stream(request: Any, ctx: grpc.aio.ServicerContext) -> Any:
                self._moved(1)
                try:
                    async for response in inner(request, ctx):
                        yield response
                finally:
                    self._moved(-1)

            return _rebuild(handler, stream)

        async def unary(request: Any, ctx: grpc.aio.ServicerContext) -> Any:
            self._moved(1)
            try:
                return await inner(request, ctx)
            finally:
                self._moved(-1)

        return _rebuild(handler, unary)


def attach_capacity(host: Any, settings: CapacitySettings | None = None) -> None:
    """Readiness for ``host`` that also follows its load (no-op without ``max_streams``)."""
    from common.readiness import CheckDependency, attach_readiness

    settings = settings or CapacitySettings()
    if settings.max_streams <= 0:
        return
    limit = settings.max_streams
    load: LoadInterceptor = host.load

    async def has_room() -> None:
        if load.in_flight >= limit:
            raise RuntimeError(f"at capacity: {load.in_flight} streams in flight, the limit is {limit}")

    readiness = attach_readiness(host, [CheckDependency("capacity", has_room)])
    pending: set[asyncio.Task[bool]] = set()

    def moved(count: int) -> None:
        full = count >= limit
        if full == (not readiness.ready) or host.draining:
            return
        task = asyncio.get_running_loop().create_task(readiness.check_now(), name="capacity-readiness")
        pending.add(task)
        task.add_done_callback(pending.discard)

    load.on_change = moved


__all__ = ["CapacitySettings", "LoadInterceptor", "attach_capacity"]
