"""Server bootstrap shared by every service.

``ServiceHost`` owns one grpc.aio server and what every service exposes next to its own API:
the standard health service, server reflection (grpcurl), Prometheus metrics, message-size
limits, the context interceptor, and a graceful drain (NOT_SERVING -> ``on_draining`` hooks such
as Consul deregistration -> stop accepting -> let open streams finish within the grace period ->
cancel the rest).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import grpc
import grpc.aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from common import telemetry
from common.auth.hops import ALLOWED_PEERS, HopRules, service_of
from common.interceptors import ContextServerInterceptor
from common.limits import LimitsServerInterceptor
from common.load import LoadCounter
from common.rpc_metrics import DRAIN_STARTED, SERVING, RedServerInterceptor
from common.settings import ServiceSettings
from common.tls import CertificateFiles, TlsConfig, process_tls, server_credentials

if TYPE_CHECKING:
    from common.auth import Auth

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServiceBinding:
    """One gRPC service to host: its full name and the generated ``add_*_to_server`` call."""

    full_name: str
    add: Callable[[grpc.aio.Server], None]


def single_service_host(
    settings: ServiceSettings,
    full_name: str,
    add: Callable[[object, grpc.aio.Server], None],
    servicer: object,
    *,
    auth: Auth | None = None,
) -> ServiceHost:
    """A host for one service: ``add`` is the generated ``add_*Servicer_to_server``.

    Every RPC needs a credential: ``auth`` defaults to what ``AuthSettings`` (the environment)
    describes. Which kinds a service admits is ``common.auth.hops``'s rule for it (stt, llm and
    tts: only the gateway's internal tokens for that service and call).
    """
    from common.auth import AuthSettings, build_auth

    auth = auth if auth is not None else build_auth(AuthSettings())
    return ServiceHost(settings, [ServiceBinding(full_name, lambda server: add(servicer, server))], auth=auth)


async def warm_up(engine: object) -> None:
    """Run an engine's optional blocking ``warm_up()`` off the event loop (before SERVING)."""
    warm = getattr(engine, "warm_up", None)
    if warm is not None:
        await asyncio.get_running_loop().run_in_executor(None, warm)


def server_options(settings: ServiceSettings) -> list[tuple[str, int]]:
    """gRPC server options from the settings (message sizes, keepalive)."""
    return [
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
        ("grpc.keepalive_time_ms", 20_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.so_reuseport", int(settings.reuse_port)),
    ]


class ServiceHost:
    """Runs one grpc.aio server with health, reflection, metrics and graceful drain."""

    def __init__(
        self,
        settings: ServiceSettings,
        bindings: Sequence[ServiceBinding],
        *,
        require_call_id: bool = True,
        interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
        tenantless: frozenset[str] = frozenset(),
        auth: Auth | None = None,
        tls: TlsConfig | None = None,
    ) -> None:
        self.settings = settings
        self._bindings = list(bindings)
        # TLS from the environment unless given (VOICEAI_TLS=off is the only way to plaintext).
        self.tls = tls if tls is not None else process_tls()
        self.identity = service_of(self.service_names)
        # Services behind the edge require a client certificate from the peers they admit.
        self.require_client_cert = self.tls.mutual and ALLOWED_PEERS.get(self.identity) is not None
        self.hops = HopRules(self.identity, mutual_tls=self.require_client_cert)
        self.certificates: CertificateFiles | None = None
        self._health_server: grpc.aio.Server | None = None
        self.health_port = 0
        # Credentials are checked after the context is bound (the auth interceptor reads it).
        self.auth = auth
        checks = [auth.server_interceptor(hops=self.hops)] if auth is not None else []
        self.load = LoadCounter()  # RPCs in flight (common.load: readiness follows capacity)
        self._server = grpc.aio.server(
            interceptors=[
                # Outermost: spans and RED series see every RPC, refusals included (issue 16).
                *telemetry.server_interceptors(),
                RedServerInterceptor(),
                ContextServerInterceptor(
                    require_call_id=require_call_id, tenantless=tenantless, load=self.load
                ),
                *checks,
                LimitsServerInterceptor(),  # issue 15: every field bounded, no NUL (common.limits)
                *interceptors,
            ],
            options=server_options(settings),
        )
        self.health = health.aio.HealthServicer()
        self.port = 0
        self.metrics_port = 0
        self._metrics_server: object | None = None
        self._stopped = asyncio.Event()
        self.draining = False
        # Closed in order after the server has stopped (pools, clients the servicers hold).
        self.on_stop: list[Callable[[], Awaitable[None]]] = []
        # Run once SERVING, and as a drain begins right after NOT_SERVING while new RPCs are still
        # accepted: discovery registration (common.consul), so clients stop picking us first.
        self.on_serving: list[Callable[[], Awaitable[None]]] = []
        self.on_draining: list[Callable[[], Awaitable[None]]] = []
        # Run when readiness comes back after a dependency outage (common.readiness): Consul may
        # have dropped an instance whose check stayed critical, so registration runs again.
        self.on_ready_again: list[Callable[[], Awaitable[None]]] = []

    @property
    def service_names(self) -> list[str]:
        return [b.full_name for b in self._bindings]

    async def start(self) -> int:
        if self.auth is not None:
            await self.auth.start()
            self.on_stop.append(self.auth.aclose)
        for binding in self._bindings:
            binding.add(self._server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._server)
        names = [*self.service_names, health.SERVICE_NAME, reflection.SERVICE_NAME]
        reflection.enable_server_reflection(names, self._server)
        address = f"{self.settings.host}:{self.settings.port}"
        if self.tls.enabled:
            self.certificates = CertificateFiles(self.tls)
            creds = server_credentials(self.certificates, require_client_cert=self.require_client_cert)
            self.port = self._server.add_secure_port(address, creds)
        else:
            self.port = self._server.add_insecure_port(address)
        if self.port == 0:
            raise RuntimeError(f"could not bind {address}")
        await self._server.start()
        await self._start_health_port()
        self._start_metrics()
        await self.set_serving(True)
        for hook in self.on_serving:
            await hook()
        log.info(
            "serving %s on %s:%d (%s, metrics %s)",
            ",".join(n.rsplit(".", 1)[-1] for n in self.service_names),
            self.settings.host,
            self.port,
            self._transport_label(),
            self.metrics_port or "off",
        )
        return self.port

    def _transport_label(self) -> str:
        if not self.tls.enabled:
            return "PLAINTEXT"
        assert self.certificates is not None
        who = self.certificates.pair.identity()
        return f"{self.tls.mode} as {who}" + (
            ", client certificate required" if self.require_client_cert else ""
        )

    async def _start_health_port(self) -> None:
        """A plaintext port with only grpc.health.v1 (kubelet probes speak no TLS)."""
        if not self.tls.enabled or self.tls.health_port < 0:
            return
        self._health_server = grpc.aio.server()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._health_server)
        address = f"{self.settings.host}:{self.tls.health_port}"
        self.health_port = self._health_server.add_insecure_port(address)
        if self.health_port == 0:
            raise RuntimeError(f"could not bind the health port {address}")
        await self._health_server.start()

    def _start_metrics(self) -> None:
        port = self.settings.metrics_port
        if self.settings.metrics_port_offset:
            port = self.port + self.settings.metrics_port_offset
        if port < 0:
            return
        from prometheus_client import start_http_server

        server, _thread = start_http_server(port, addr=self.settings.host)
        self._metrics_server = server
        self.metrics_port = server.server_port

    async def set_serving(self, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        await self.health.set("", status)
        SERVING.set(1 if serving else 0)
        for name in self.service_names:
            await self.health.set(name, status)

    async def drain(self, grace: float | None = None) -> None:
        """NOT_SERVING, refuse new RPCs, let open ones finish within ``grace``, then stop."""
        if self.draining:
            await self._stopped.wait()
            return
        self.draining = True
        DRAIN_STARTED.set_to_current_time()
        grace = self.settings.grace_period_s if grace is None else grace
        log.info("draining: NOT_SERVING, open streams get %.0f s to finish", grace)
        await self.set_serving(False)
        try:
            for hook in self.on_draining:
                try:
                    await hook()
                except Exception:
                    log.exception("a drain hook failed")
            if self.settings.drain_notice_s > 0:
                await asyncio.sleep(self.settings.drain_notice_s)
            await self._server.stop(grace)
            if self._health_server is not None:
                await self._health_server.stop(None)
        finally:
            if self._metrics_server is not None:
                with contextlib.suppress(Exception):
                    self._metrics_server.shutdown()  # type: ignore[attr-defined]
                    self._metrics_server.server_close()  # type: ignore[attr-defined]
            for close in self.on_stop:
                try:
                    await close()
                except Exception:
                    log.exception("closing a resource after stop failed")
            self._stopped.set()
            log.info("stopped")

    async def wait_stopped(self) -> None:
        await self._stopped.wait()

    async def serve_until_signal(self) -> None:
        """Block until SIGTERM or SIGINT, then drain."""
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:
            await stop.wait()
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
        await self.drain()


def tune_runtime(settings: ServiceSettings) -> None:
    """Process-wide knobs for a latency-sensitive server (measured with make bench).

    A shorter GIL switch interval lets grpc's poller thread hand messages to the event loop
    sooner (the 5 ms default shows up directly in per-hop latency). Start-up objects (modules,
    models) are frozen so collections do not rescan them. A full collection stops the loop for
    as long as it takes to traverse every live object; a service whose sessions are freed by
    reference counting (no cycles, so nothing waits for a full collection) can make them rarer.
    """
    sys.setswitchinterval(settings.gil_switch_interval_s)
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, settings.gc_full_collection_every)
    gc.collect()
    gc.freeze()


def run(main: Callable[[], object], settings: ServiceSettings) -> None:
    """Run an async entry point on uvloop when available (and wanted)."""
    tune_runtime(settings)
    if settings.use_uvloop:
        try:
            import uvloop

            uvloop.run(main())  # type: ignore[arg-type]
            return
        except ImportError:
            pass
    asyncio.run(main())  # type: ignore[arg-type]
