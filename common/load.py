"""What a service is doing right now, and readiness that follows it: overload sheds.

``LoadCounter`` (every ``ServiceHost`` has one, ``host.load``) counts the RPCs in flight.
With ``VOICEAI_MAX_STREAMS`` set, ``attach_capacity`` makes the host NOT_SERVING for new work
while that many are open (at once, not at the next readiness poll) and SERVING again when one
ends; Consul's check and the gateway's admission (``gateway.admission.require_capacity``) then
send new calls elsewhere or refuse them with a retry hint, while the streams of calls already
admitted (their next turns too) are still served.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from prometheus_client import Gauge
from pydantic_settings import BaseSettings, SettingsConfigDict

IN_FLIGHT = Gauge("voiceai_rpcs_in_flight", "RPCs in flight on this process (health and reflection excluded)")


class CapacitySettings(BaseSettings):
    """How much concurrent work a service takes before it says it is full (env prefix VOICEAI_)."""

    model_config = SettingsConfigDict(env_prefix="VOICEAI_", extra="ignore")

    # Streams/RPCs in flight at which readiness turns NOT_SERVING (0 = never): size it to what
    # the engines sustain at the latency callers expect (make bench shows where that is).
    max_streams: int = 0


class LoadCounter:
    """Counts RPCs in flight (``ContextServerInterceptor`` reports each RPC's start and end, in
    the wrapper it already has: no extra hop per message); ``on_change`` runs on every move."""

    def __init__(self) -> None:
        self.in_flight = 0
        self.on_change: Callable[[int], None] | None = None

    def started(self) -> None:
        """One more RPC runs."""
        self._moved(1)

    def ended(self) -> None:
        """One RPC ended."""
        self._moved(-1)

    def _moved(self, delta: int) -> None:
        self.in_flight += delta
        IN_FLIGHT.inc(delta)
        if self.on_change is not None:
            self.on_change(self.in_flight)


def attach_capacity(host: Any, settings: CapacitySettings | None = None) -> None:
    """Readiness for ``host`` that also follows its load (no-op without ``max_streams``)."""
    from common.readiness import CheckDependency, attach_readiness

    settings = settings or CapacitySettings()
    if settings.max_streams <= 0:
        return
    limit = settings.max_streams
    load: LoadCounter = host.load

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


__all__ = ["CapacitySettings", "LoadCounter", "attach_capacity"]
