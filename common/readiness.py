"""Health that tells the truth: readiness follows the dependencies new work needs.

A ``Readiness`` checks each ``Dependency`` (PostgreSQL for tenant_svc, Redis for a gateway whose
call admission fails closed...) every ``interval_s``. While any is failing, the host's readiness
(the standard gRPC health status of ``""`` and of every service it serves, which Kubernetes'
readiness probe and Consul's gRPC check read) is NOT_SERVING, so new work goes elsewhere; it is
SERVING again as soon as all pass. Liveness is a separate health name, ``liveness``, that stays
SERVING while the process runs (point Kubernetes' liveness probe at it): a database outage must
not get healthy pods restarted. A drain wins over everything: once draining, nothing here sets
SERVING again.

Operators get the detail (which dependency, since when, the error) as JSON from
``detail()``, served over HTTP by ``serve_healthz`` (``GET /healthz``; ``VOICEAI_HEALTHZ_PORT``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from grpc_health.v1 import health_pb2
from prometheus_client import Gauge
from pydantic_settings import BaseSettings, SettingsConfigDict

from common.server import ServiceHost
from common.tasks import cancel_and_wait

log = logging.getLogger(__name__)

LIVENESS = "liveness"
DEPENDENCY_UP = Gauge(
    "voiceai_dependency_up", "1 while a dependency's readiness check passes", ["dependency"]
)


class Dependency(Protocol):
    """Something a service needs for new work; ``check`` raises (with a reason) when it is down."""

    name: str

    async def check(self) -> None:
        """Returns when the dependency works; raises an exception saying why it does not."""
        ...


@dataclass(slots=True)
class CheckDependency:
    """A ``Dependency`` from a name and an async probe."""

    name: str
    probe: Callable[[], Awaitable[object]]

    async def check(self) -> None:
        """Runs the probe."""
        await self.probe()


@dataclass(slots=True)
class DependencyState:
    """The last verdict on one dependency."""

    ok: bool = True
    detail: str = ""
    since: float = field(default_factory=time.time)
    checked: float = 0.0


class Readiness:
    """Drives a host's readiness from its dependencies' checks (see the module docstring)."""

    def __init__(
        self,
        host: ServiceHost,
        dependencies: list[Dependency],
        *,
        interval_s: float = 1.0,
        timeout_s: float = 1.0,
    ) -> None:
        self._host = host
        self._deps = dependencies
        self._interval = interval_s
        self._timeout = timeout_s
        self.states = {d.name: DependencyState() for d in dependencies}
        self._task: asyncio.Task[None] | None = None
        self._ready = True
        self.changed = asyncio.Event()
        self.healthz_port = 0  # set when the HTTP detail endpoint runs

    @property
    def ready(self) -> bool:
        """Whether every dependency passed its last check."""
        return self._ready

    def failing(self) -> list[str]:
        """Names of the dependencies that failed their last check."""
        return [name for name, s in self.states.items() if not s.ok]

    async def start(self) -> None:
        """Marks liveness SERVING, checks once, then keeps checking in the background."""
        await self._host.health.set(LIVENESS, health_pb2.HealthCheckResponse.SERVING)
        await self.check_now()
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="readiness")

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            await self.check_now()

    async def check_now(self) -> bool:
        """Checks every dependency now and applies the verdict; returns readiness."""
        results = await asyncio.gather(*(self._check(d) for d in self._deps))
        now = time.time()
        for dep, error in zip(self._deps, results, strict=True):
            state = self.states[dep.name]
            state.checked = now
            ok = error is None
            DEPENDENCY_UP.labels(dep.name).set(1 if ok else 0)
            if ok != state.ok:
                state.since = now
                if ok:
                    log.warning("dependency %s is back", dep.name)
                else:
                    log.error("dependency %s is down: %s; not ready for new work", dep.name, error)
            state.ok, state.detail = ok, error or ""
        await self._apply(all(s.ok for s in self.states.values()))
        return self._ready

    async def _check(self, dep: Dependency) -> str | None:
        try:
            await asyncio.wait_for(dep.check(), self._timeout)
        except TimeoutError:
            return f"no answer within {self._timeout:.1f} s"
        except Exception as e:  # any failure means "down"; the reason is what operators need
            return f"{type(e).__name__}: {e}"[:300]
        return None

    async def _apply(self, ready: bool) -> None:
        if ready == self._ready:
            return
        self._ready = ready
        self.changed.set()
        self.changed = asyncio.Event()
        if self._host.draining:
            return  # a drain already said NOT_SERVING and keeps saying it
        status = (
            health_pb2.HealthCheckResponse.SERVING if ready else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ("", *self._host.service_names):
            await self._host.health.set(name, status)
        if ready:
            for hook in self._host.on_ready_again:
                try:
                    await hook()
                except Exception:
                    log.exception("a hook run on regained readiness failed")

    def detail(self) -> dict[str, object]:
        """What an operator needs: ready or not, and each dependency's state."""
        return {
            "ready": self._ready and not self._host.draining,
            "draining": self._host.draining,
            "dependencies": {
                name: {"ok": s.ok, "detail": s.detail, "since": s.since, "checked": s.checked}
                for name, s in self.states.items()
            },
        }

    async def aclose(self) -> None:
        """Stops checking."""
        await cancel_and_wait(self._task)
        self._task = None


class ReadinessSettings(BaseSettings):
    """How readiness is checked and shown (env prefix VOICEAI_)."""

    model_config = SettingsConfigDict(env_prefix="VOICEAI_", extra="ignore")

    readiness_interval_s: float = 1.0
    readiness_timeout_s: float = 1.0
    # HTTP port of GET /healthz (operator detail) and /livez; -1 = off, 0 = any free port.
    healthz_port: int = -1


def attach_readiness(
    host: ServiceHost, dependencies: list[Dependency], settings: ReadinessSettings | None = None
) -> Readiness:
    """Readiness for ``host``: started once it is SERVING, stopped with it (healthz likewise)."""
    settings = settings or ReadinessSettings()
    readiness = Readiness(
        host, dependencies, interval_s=settings.readiness_interval_s, timeout_s=settings.readiness_timeout_s
    )
    servers: list[asyncio.Server] = []

    async def start() -> None:
        await readiness.start()
        if settings.healthz_port >= 0:
            server = await serve_healthz(readiness, host.settings.host, settings.healthz_port)
            servers.append(server)
            readiness.healthz_port = server.sockets[0].getsockname()[1]
            log.info(
                "operator health detail on http://%s:%d/healthz", host.settings.host, readiness.healthz_port
            )

    async def stop() -> None:
        await readiness.aclose()
        for server in servers:
            server.close()
            await server.wait_closed()

    host.on_serving.insert(0, start)  # before Consul registration: register only when ready
    host.on_stop.append(stop)
    return readiness


async def serve_healthz(readiness: Readiness, host: str, port: int) -> asyncio.Server:
    """A minimal HTTP endpoint: ``GET /healthz`` -> 200 or 503 with ``Readiness.detail()`` as
    JSON; ``GET /livez`` -> 200. Nothing else, no request body read."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), 5)
            path = line.split(b" ")[1] if line.count(b" ") >= 2 else b""
            if path == b"/livez":
                code, body = 200, b'{"live": true}'
            elif path == b"/healthz":
                detail = readiness.detail()
                code, body = (200 if detail["ready"] else 503), json.dumps(detail).encode()
            else:
                code, body = 404, b'{"error": "GET /healthz or /livez"}'
            reason = {200: "OK", 503: "Service Unavailable", 404: "Not Found"}[code]
            writer.write(
                f"HTTP/1.0 {code} {reason}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    return await asyncio.start_server(handle, host, port)


__all__ = [
    "LIVENESS",
    "CheckDependency",
    "Dependency",
    "DependencyState",
    "Readiness",
    "ReadinessSettings",
    "attach_readiness",
    "serve_healthz",
]
