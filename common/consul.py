"""Consul service registration: settings, the py-consul client, and one instance's lifecycle.

With ``CONSUL_HTTP_ADDR`` (or ``VOICEAI_CONSUL_ADDR``) set, every ``python -m <service>`` registers
itself with the local Consul agent once it is SERVING, with a native gRPC health check against
the standard ``grpc.health.v1`` service the host already serves, and deregisters at the start of
its drain, before it refuses new RPCs. With neither set nothing here runs (static discovery).

py-consul's asyncio client needs aiohttp, which the mesh does not ship; its ``requests`` client
runs off the event loop instead, one call per daemon thread (``off_loop``): a blocking query can
hold a thread for its whole ``wait``, and a daemon thread never holds up the loop, a shared
executor or the process's exit.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import ipaddress
import logging
import re
import secrets
import threading
import urllib.parse
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from common.errors import Unavailable

if TYPE_CHECKING:
    import consul

    from common.server import ServiceHost

log = logging.getLogger(__name__)

T = TypeVar("T")
_GO_DURATION = re.compile(r"^(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+$")
_META_KEY = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def _package_version() -> str:
    try:
        return importlib.metadata.version("voiceai-mesh")
    except importlib.metadata.PackageNotFoundError:
        return "0.0.0"


class ConsulSettings(BaseSettings):
    """Where the Consul agent is and how this process appears in it (env ``VOICEAI_CONSUL_*``)."""

    model_config = SettingsConfigDict(env_prefix="VOICEAI_CONSUL_", extra="ignore", populate_by_name=True)

    # The local agent's HTTP API: "host:port", "http://host:port" or "https://host:port".
    # Empty = no Consul: static discovery, no registration.
    addr: str = Field(default="", validation_alias=AliasChoices("VOICEAI_CONSUL_ADDR", "CONSUL_HTTP_ADDR"))
    # ACL token (service:write for our services, service:read + node:read to watch them).
    token: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("VOICEAI_CONSUL_TOKEN", "CONSUL_HTTP_TOKEN")
    )
    # CA bundle for an https agent address.
    ca_cert: str = Field(default="", validation_alias=AliasChoices("VOICEAI_CONSUL_CA_CERT", "CONSUL_CACERT"))
    # Datacenter to read instances from; empty = the agent's own.
    datacenter: str = ""
    # Consul service name = prefix + logical name ("voiceai-stt").
    service_prefix: str = "voiceai-"
    version: str = Field(default_factory=_package_version)
    # This instance's zone (tag "zone=<z>", meta "zone"); clients in a zone prefer it when healthy.
    zone: str = ""
    prefer_zone: bool = True
    # This instance runs a GPU-backed engine (tag "gpu", meta gpu=true).
    gpu: bool = False
    # Extra comma-separated tags, and extra meta as JSON ('{"team": "voice"}').
    tags: str = ""
    meta: dict[str, str] = Field(default_factory=dict)
    # The gRPC health check the agent runs (Go durations).
    check_interval: str = "5s"
    check_timeout: str = "2s"
    deregister_critical_after: str = "1m"
    # What others dial; default: the host and port the server bound (never 0.0.0.0).
    advertise_host: str = ""
    advertise_port: int = 0
    # Resolver: longest a blocking query is held; retry backoff cap; wait for the first answer.
    watch_wait: str = "30s"
    watch_retry_max_s: float = 10.0
    first_fetch_timeout_s: float = 3.0
    # Each non-blocking request (register, deregister); registration retries for this long.
    request_timeout_s: float = 5.0
    register_timeout_s: float = 30.0

    @field_validator("check_interval", "check_timeout", "deregister_critical_after", "watch_wait")
    @classmethod
    def _go_duration(cls, value: str) -> str:
        if not _GO_DURATION.match(value):
            raise ValueError(f"{value!r} is not a Go duration such as '5s', '500ms' or '1m'")
        return value

    @field_validator("meta")
    @classmethod
    def _meta_keys(cls, value: dict[str, str]) -> dict[str, str]:
        bad = [k for k in value if not _META_KEY.match(k)]
        if bad:
            raise ValueError(f"Consul meta keys must be 1-64 of [A-Za-z0-9_-]: {bad}")
        return value

    @property
    def enabled(self) -> bool:
        return bool(self.addr.strip())

    def service_name(self, logical: str) -> str:
        """``stt_svc`` or ``stt`` -> ``voiceai-stt``."""
        return self.service_prefix + logical.removesuffix("_svc")


def consul_client(settings: ConsulSettings, timeout: float | None = None) -> consul.Consul:
    """A py-consul (requests) client for the configured agent; one per thread of use."""
    import consul  # only when Consul is configured: py-consul and requests cost ~0.1 s to import

    raw = settings.addr.strip()
    url = urllib.parse.urlsplit(raw if "//" in raw else f"//{raw}")
    scheme = url.scheme or "http"
    try:
        port = url.port or (8501 if scheme == "https" else 8500)
    except ValueError as e:
        raise ValueError(f"CONSUL_HTTP_ADDR={raw!r} is not host:port or scheme://host:port") from e
    token = settings.token.get_secret_value() if settings.token else None
    client = consul.Consul(
        host=url.hostname or "127.0.0.1",
        port=port,
        token=token,
        scheme=scheme,
        dc=settings.datacenter or None,
        verify=settings.ca_cert or True,
        connections_timeout=settings.request_timeout_s if timeout is None else timeout,
    )
    # py-consul lets CONSUL_HTTP_TOKEN override the argument; the settings are the one source.
    client.token = token
    return client


def _detached(error: BaseException) -> BaseException:
    """``error`` (and the exceptions chained to it) without tracebacks, to hand to another thread.

    A traceback keeps the frames of this short-lived thread (and their locals: the HTTP session
    and response) alive after the thread has exited; the loop thread would then own, traverse
    and free them. Full test runs segfaulted (rarely, always right after a refused Consul call)
    in the loop thread; the message and type are all a caller uses.
    """
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        current.__traceback__ = None
        current = current.__cause__ or current.__context__
    return error


async def off_loop(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run blocking ``fn`` on a daemon thread; cancelling the await abandons (not kills) it."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(ok: bool, value: Any) -> None:
        if not future.done():
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)

    def work() -> None:
        outcome: tuple[bool, Any]
        try:
            outcome = (True, fn(*args, **kwargs))
        except BaseException as e:
            outcome = (False, _detached(e))
        try:
            loop.call_soon_threadsafe(settle, *outcome)
        except RuntimeError:
            pass  # the loop closed while a blocking query was still out

    threading.Thread(target=work, name=f"consul-{getattr(fn, '__name__', 'call')}", daemon=True).start()
    return await future


def _dialable(host: str) -> str:
    if not host:
        raise ValueError("cannot advertise an empty host to Consul: set VOICEAI_CONSUL_ADVERTISE_HOST")
    try:
        unspecified = ipaddress.ip_address(host.strip("[]")).is_unspecified
    except ValueError:
        unspecified = False  # a host name
    if unspecified:
        raise ValueError(
            f"cannot advertise {host} to Consul: it means 'every interface' and nobody can dial it;"
            " set VOICEAI_CONSUL_ADVERTISE_HOST to this instance's routable address"
        )
    return host


class ConsulRegistration:
    """One service instance in the local Consul agent: register once serving, deregister on drain."""

    def __init__(
        self,
        settings: ConsulSettings,
        logical_name: str,
        grpc_service: str,
        bound_host: str,
        *,
        tls_server_name: str = "",
    ) -> None:
        self.settings = settings
        # TLS on (the default): the instance is advertised as TLS and the agent's gRPC check
        # speaks TLS, verifying the certificate against this name (the service's identity).
        self.tls_server_name = tls_server_name
        self.name = settings.service_name(logical_name)
        self.grpc_service = grpc_service
        # Checked now, before the server binds, so a bad address fails the start at once.
        self.host = _dialable(settings.advertise_host or bound_host)
        self.port = 0
        self.service_id = ""
        self._client = consul_client(settings)
        from consul.exceptions import ACLDisabled, ACLPermissionDenied, BadRequest, ClientError

        # The agent understood and said no (4xx: ACL, bad definition); anything else may pass.
        self._refused = (ACLDisabled, ACLPermissionDenied, BadRequest, ClientError)

    def tags(self) -> list[str]:
        s = self.settings
        tags = [f"version={s.version}"]
        if s.zone:
            tags.append(f"zone={s.zone}")
        if s.gpu:
            tags.append("gpu")
        if self.tls_server_name:
            tags.append("tls")
        tags += [t.strip() for t in s.tags.split(",") if t.strip()]
        return tags

    def meta(self) -> dict[str, str]:
        s = self.settings
        meta = {**s.meta, "version": s.version, "zone": s.zone, "gpu": "true" if s.gpu else "false"}
        if self.tls_server_name:
            meta["tls_server_name"] = self.tls_server_name
        return meta

    def check(self) -> dict[str, Any]:
        s = self.settings
        return {
            "Name": f"gRPC health of {self.grpc_service}",
            "GRPC": f"{_host_port(self.host, self.port)}/{self.grpc_service}",
            "GRPCUseTLS": bool(self.tls_server_name),
            **({"TLSServerName": self.tls_server_name} if self.tls_server_name else {}),
            "Interval": s.check_interval,
            "Timeout": s.check_timeout,
            "DeregisterCriticalServiceAfter": s.deregister_critical_after,
        }

    async def register(self, bound_port: int) -> None:
        """Register (retrying while the agent is unreachable, up to ``register_timeout_s``)."""
        self.port = self.settings.advertise_port or bound_port
        service_id = f"{self.name}-{self.host}-{self.port}-{secrets.token_hex(3)}"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.register_timeout_s
        delay = 0.2
        while True:
            try:
                await off_loop(
                    self._client.agent.service.register,
                    self.name,
                    service_id=service_id,
                    address=self.host,
                    port=self.port,
                    tags=self.tags(),
                    meta=self.meta(),
                    check=self.check(),
                )
                self.service_id = service_id
                break
            except self._refused:
                raise  # a bad token or definition: retrying cannot help
            except Exception as e:
                if loop.time() + delay > deadline:
                    raise Unavailable(
                        f"could not register {self.name} with Consul at {self.settings.addr}: {e}"
                    ) from e
                log.warning("consul: registering %s failed (%s); retrying in %.1f s", self.name, e, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        log.info(
            "consul: registered %s as %s at %s", self.name, self.service_id, _host_port(self.host, self.port)
        )

    async def deregister(self) -> None:
        """Remove this instance (bounded: an unreachable agent must not stall the drain)."""
        if not self.service_id:
            return
        service_id, self.service_id = self.service_id, ""
        try:
            known = await asyncio.wait_for(
                off_loop(self._client.agent.service.deregister, service_id), self.settings.request_timeout_s
            )
            log.info(
                "consul: deregistered %s%s", service_id, "" if known else " (the agent no longer had it)"
            )
        except Exception as e:
            # The agent deregisters it anyway once its check has been critical for a while.
            log.warning(
                "consul: deregistering %s failed (%s); the agent drops it after %s critical",
                service_id,
                e,
                self.settings.deregister_critical_after,
            )


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def register_with_consul(
    host: ServiceHost, logical_name: str, settings: ConsulSettings | None = None
) -> ConsulRegistration | None:
    """Make ``host`` register itself once SERVING and deregister as its drain begins.

    None (and nothing changes) when no Consul is configured.
    """
    settings = settings if settings is not None else ConsulSettings()
    if not settings.enabled:
        return None
    grpc_service = _first(host.service_names)
    tls_name = (host.identity or logical_name) if host.tls.enabled else ""
    reg = ConsulRegistration(
        settings, logical_name, grpc_service, host.settings.host, tls_server_name=tls_name
    )
    host.on_serving.append(lambda: reg.register(host.port))
    host.on_ready_again.append(lambda: reg.register(host.port))  # after a dependency outage
    host.on_draining.append(reg.deregister)
    return reg


def _first(names: Sequence[str]) -> str:
    if not names:
        raise ValueError("a host with no service of its own has nothing to register in Consul")
    return names[0]
