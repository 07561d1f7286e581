"""Service discovery and client-side balancing of long-lived streams.

``Resolver`` answers "which instances serve X"; ``StaticResolver`` reads fixed addresses (the
default when no Consul is configured; ``common.consul_resolver.ConsulResolver`` implements the
same Protocol).
``ChannelPool`` keeps one channel per instance and opens each new stream on the instance with
the fewest streams in flight (ties broken round-robin), so long calls spread evenly. An instance
that leaves discovery gets no new streams; its channel closes once its last stream has ended.
An instance a client saw fail (``mark_failed``) gets no new streams for a few seconds while any
other instance is available: a stream that fails over does not land on the instance that just
died, before discovery has noticed.
"""

from __future__ import annotations

import contextlib
import itertools
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import grpc
import grpc.aio

from common.errors import Unavailable
from common.interceptors import context_client_interceptors
from common.tls import ChannelFactory, process_channels


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One instance of a service."""

    address: str  # host:port
    zone: str = ""
    tags: tuple[str, ...] = ()


class Resolver(Protocol):
    """Which healthy instances serve a service, by logical name ("stt", "llm", "tts")."""

    async def resolve(self, service: str) -> Sequence[Endpoint]: ...


class StaticResolver:
    """Fixed addresses from configuration."""

    def __init__(self, addresses: Mapping[str, Sequence[str]]) -> None:
        self._endpoints = {name: tuple(Endpoint(a) for a in addrs) for name, addrs in addresses.items()}

    async def resolve(self, service: str) -> Sequence[Endpoint]:
        return self._endpoints.get(service, ())


def channel_options(max_message_bytes: int = 4 * 1024 * 1024) -> list[tuple[str, int]]:
    """gRPC client channel options (message size limits, keepalive)."""
    return [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.keepalive_time_ms", 20_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
        # Reconnect fast after an instance restarts; the default backoff grows to minutes.
        ("grpc.initial_reconnect_backoff_ms", 200),
        ("grpc.min_reconnect_backoff_ms", 200),
        ("grpc.max_reconnect_backoff_ms", 2_000),
    ]


@dataclass(frozen=True, slots=True)
class Lease:
    """One stream's hold on an instance: its address (for ``mark_failed``) and channel."""

    address: str
    channel: grpc.aio.Channel


class _Instance:
    __slots__ = ("channel", "endpoint", "generation", "in_flight", "retired")

    def __init__(self, endpoint: Endpoint, channel: grpc.aio.Channel, generation: int = 0) -> None:
        self.endpoint = endpoint
        self.channel = channel
        # The client certificate generation the channel was built with (rotation).
        self.generation = generation
        self.in_flight = 0
        # Gone from discovery while streams still ran on it: closed when the last one ends.
        self.retired = False


class ChannelPool:
    """Channels to every instance of one service; picks the least-loaded one per stream."""

    def __init__(
        self,
        service: str,
        resolver: Resolver,
        *,
        propagate_context: bool = True,
        failure_penalty_s: float = 5.0,
        channels: ChannelFactory | None = None,
    ) -> None:
        self.service = service
        self._resolver = resolver
        self._instances: dict[str, _Instance] = {}
        self._interceptors = context_client_interceptors(service) if propagate_context else []
        # TLS per the process's settings unless given; the server must prove it is ``service``.
        self._channels = channels if channels is not None else process_channels()
        self._rr = itertools.count()
        self._retired: set[_Instance] = set()
        self._failure_penalty_s = failure_penalty_s
        self._failed_until: dict[str, float] = {}  # address -> monotonic time the penalty ends

    async def _refresh(self) -> list[_Instance]:
        endpoints = await self._resolver.resolve(self.service)
        listed = {ep.address for ep in endpoints}
        for addr in [a for a in self._instances if a not in listed]:
            await self._retire(self._instances.pop(addr))
        # Built after the last await, so what pick() returns is open and still listed.
        generation = self._channels.generation
        for addr in [a for a, inst in self._instances.items() if inst.generation != generation]:
            # Our certificate rotated: new streams get a channel with the new pair, streams
            # running on the old channel finish there.
            await self._retire(self._instances.pop(addr))
        live: list[_Instance] = []
        for ep in endpoints:
            inst = self._instances.get(ep.address)
            if inst is None:
                channel = self._channels.channel(
                    ep.address, self.service, options=channel_options(), interceptors=self._interceptors
                )
                inst = _Instance(ep, channel, generation)
                self._instances[ep.address] = inst
            live.append(inst)
        return live

    async def _retire(self, inst: _Instance) -> None:
        """Gone from discovery: no new streams. Idle, its channel closes now; else when the last
        stream on it ends (discovery never cuts a stream that is running)."""
        if inst.in_flight:
            inst.retired = True
            self._retired.add(inst)
        else:
            await inst.channel.close()

    def mark_failed(self, address: str, seconds: float | None = None) -> None:
        """A stream on ``address`` just failed in a way that points at the instance (it died,
        reset the stream, was overloaded): new streams avoid it for ``seconds`` (default the
        pool's ``failure_penalty_s``) unless no other instance is available."""
        until = time.monotonic() + (self._failure_penalty_s if seconds is None else seconds)
        self._failed_until[address] = max(until, self._failed_until.get(address, 0.0))

    def _healthy(self, live: list[_Instance]) -> list[_Instance]:
        if not self._failed_until:
            return live
        now = time.monotonic()
        for addr in [a for a, until in self._failed_until.items() if until <= now]:
            del self._failed_until[addr]
        healthy = [inst for inst in live if inst.endpoint.address not in self._failed_until]
        return healthy or live  # all of them failed recently: a retry may still succeed

    async def pick(self) -> _Instance:
        live = self._healthy(await self._refresh())
        if not live:
            raise Unavailable(f"no instance of the {self.service} service is known to discovery")
        start = next(self._rr)
        n = len(live)
        return min((live[(start + i) % n] for i in range(n)), key=lambda inst: inst.in_flight)

    @contextlib.asynccontextmanager
    async def stream(self) -> AsyncIterator[grpc.aio.Channel]:
        """A channel for one stream, counted as in flight until the block exits."""
        async with self.lease() as lease:
            yield lease.channel

    @contextlib.asynccontextmanager
    async def lease(self) -> AsyncIterator[Lease]:
        """Like ``stream``, and says which instance was picked."""
        inst = await self.pick()
        inst.in_flight += 1
        try:
            yield Lease(inst.endpoint.address, inst.channel)
        finally:
            inst.in_flight -= 1
            if inst.retired and not inst.in_flight:
                self._retired.discard(inst)
                await inst.channel.close()

    def in_flight(self) -> dict[str, int]:
        """Streams in flight per address discovery still lists (retired instances excluded)."""
        return {addr: inst.in_flight for addr, inst in self._instances.items()}

    def failed(self) -> list[str]:
        """Addresses currently avoided after ``mark_failed``."""
        now = time.monotonic()
        return [a for a, until in self._failed_until.items() if until > now]

    def retired(self) -> dict[str, int]:
        """Streams still running on instances discovery no longer lists."""
        return {inst.endpoint.address: inst.in_flight for inst in self._retired}

    async def close(self) -> None:
        for inst in [*self._instances.values(), *self._retired]:
            await inst.channel.close()
        self._instances.clear()
        self._retired.clear()
