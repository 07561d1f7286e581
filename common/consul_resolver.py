"""``ConsulResolver``: the healthy instances of each service, kept current by a Consul watch.

One task per watched service holds a blocking query on ``/v1/health/service/<name>?passing``
(``index`` + ``wait``), so a change (an instance registered, deregistered, or its check turning
critical) arrives within one round trip. ``resolve()`` only reads the last answer: after the
first one it never waits on Consul, and while Consul is unreachable the last good list stays
(the instances themselves are most likely still fine) and the watch retries with backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Iterable, Sequence
from typing import Any

from prometheus_client import Counter, Gauge

from common.consul import ConsulSettings, consul_client, off_loop
from common.discovery import Endpoint, Resolver, StaticResolver
from common.errors import Unavailable
from common.settings import DiscoverySettings
from common.store_metrics import timed
from common.tasks import cancel_and_wait

log = logging.getLogger(__name__)

HEALTHY = Gauge(
    "voiceai_discovery_healthy_instances", "Healthy instances Consul reports, per service", ["service"]
)
WATCH_ERRORS = Counter(
    "voiceai_discovery_watch_errors_total", "Failed Consul health queries, per service", ["service"]
)
_FIRST_RETRY_S = 0.2


class _Watch:
    """One service's latest healthy list and the task that keeps it current."""

    __slots__ = ("answered", "endpoints", "task")

    def __init__(self) -> None:
        self.endpoints: tuple[Endpoint, ...] = ()
        # Set after the first attempt, whatever its outcome: resolve() waits for it only once.
        self.answered = asyncio.Event()
        self.task: asyncio.Task[None] | None = None


class ConsulResolver:
    """The Resolver Protocol over Consul's health API (passing instances only)."""

    def __init__(self, settings: ConsulSettings) -> None:
        self.settings = settings
        self._watches: dict[str, _Watch] = {}
        self._closed = False

    def watch(self, *services: str) -> None:
        """Start watching ``services`` now (resolve() starts any other on first use)."""
        for service in services:
            self._watch(service)

    async def resolve(self, service: str) -> Sequence[Endpoint]:
        watch = self._watch(service)
        if not watch.answered.is_set():
            # A caller waits on Consul only here (later answers come from the watch): a span in
            # the caller's trace and a latency sample (issue 16).
            with contextlib.suppress(TimeoutError), timed("consul", "first_lookup"):
                await asyncio.wait_for(watch.answered.wait(), self.settings.first_fetch_timeout_s)
        return watch.endpoints

    async def aclose(self) -> None:
        self._closed = True
        await cancel_and_wait(*(w.task for w in self._watches.values()))

    def _watch(self, service: str) -> _Watch:
        watch = self._watches.get(service)
        if watch is None:
            if self._closed:
                raise Unavailable("service discovery is closed")
            watch = self._watches[service] = _Watch()
            watch.task = asyncio.get_running_loop().create_task(
                self._run(service, watch), name=f"consul-watch-{service}"
            )
        return watch

    async def _run(self, service: str, watch: _Watch) -> None:
        name = self.settings.service_name(service)
        # One client per watch: requests sessions are not shared across threads.
        client = consul_client(self.settings)
        index = 0
        delay = _FIRST_RETRY_S
        failing = False
        while True:
            try:
                new_index, entries = await off_loop(
                    client.health.service, name, index=index, wait=self.settings.watch_wait, passing=True
                )
            except Exception as e:
                WATCH_ERRORS.labels(service).inc()
                if not failing:
                    log.warning(
                        "consul: watching %s failed (%s); keeping its last %d healthy instances, retrying",
                        name,
                        e,
                        len(watch.endpoints),
                    )
                # The retry asks without blocking: it confirms recovery at once and catches up.
                failing, index = True, 0
                watch.answered.set()
                await asyncio.sleep(delay * random.uniform(0.8, 1.2))
                delay = min(delay * 2, self.settings.watch_retry_max_s)
                continue
            if failing:
                log.info("consul: watching %s again", name)
            failing, delay = False, _FIRST_RETRY_S
            previous, index = index, int(new_index)
            # Consul: an index that goes backwards (or is not positive) restarts the watch.
            if index <= 0 or index < previous:
                index = 0
            self._update(service, watch, entries or [])
            watch.answered.set()

    def _update(self, service: str, watch: _Watch, entries: Iterable[dict[str, Any]]) -> None:
        unique = {ep.address: ep for ep in map(_endpoint, entries)}
        endpoints = tuple(unique[a] for a in sorted(unique))
        HEALTHY.labels(service).set(len(endpoints))
        chosen = self._prefer_zone(endpoints)
        if chosen != watch.endpoints:
            before, after = {e.address for e in watch.endpoints}, {e.address for e in chosen}
            log.info(
                "consul: %s has %d healthy instances in use (+%s -%s)",
                self.settings.service_name(service),
                len(chosen),
                ",".join(sorted(after - before)) or "none",
                ",".join(sorted(before - after)) or "none",
            )
            watch.endpoints = chosen

    def _prefer_zone(self, endpoints: tuple[Endpoint, ...]) -> tuple[Endpoint, ...]:
        zone = self.settings.zone
        if not (zone and self.settings.prefer_zone):
            return endpoints
        local = tuple(ep for ep in endpoints if ep.zone == zone)
        return local or endpoints


def _endpoint(entry: dict[str, Any]) -> Endpoint:
    service = entry["Service"]
    host = service.get("Address") or (entry.get("Node") or {}).get("Address", "")
    port = int(service["Port"])
    tags = tuple(service.get("Tags") or ())
    zone = (service.get("Meta") or {}).get("zone") or next(
        (t.removeprefix("zone=") for t in tags if t.startswith("zone=")), ""
    )
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return Endpoint(address, zone, tags)


def resolver_from_settings(
    discovery: DiscoverySettings | None = None, consul: ConsulSettings | None = None
) -> Resolver:
    """Consul when it is configured (``CONSUL_HTTP_ADDR``), else the static addresses."""
    consul = consul if consul is not None else ConsulSettings()
    if consul.enabled:
        return ConsulResolver(consul)
    return StaticResolver((discovery if discovery is not None else DiscoverySettings()).static_map())
