"""Deepgram Nova-3 streaming recognition over the listen websocket (``deepgram-sdk`` 7).

``DeepgramRecognizer`` opens one websocket per stream (``deepgram_stream.DeepgramStream`` runs
it): options become the listen query (model, language or ``multi``, Nova-3 ``keyterm``s,
``endpointing``, ``utterance_end_ms``, ``smart_format``, interim results and VAD events).

The base URL is configurable, so a self-hosted (GPU) Deepgram is used the same way; several
URLs are balanced least-in-flight and a failing one is avoided for a while. Keys come from
the injected ``common.providers.KeySource`` (a tenant's own key, else the deployment's); a self-hosted
endpoint may need none. Each (URL, key) has one SDK client, cached and bounded.

The handshake has a deadline (``connect_timeout_s``); a refused one becomes a ``ProviderError``
whose ``kind`` (rate_limited + Retry-After, server_error, auth, ...) the chain acts on. Nothing
here logs a key: the SDK's ``ApiError`` prints the request headers, so it is never chained.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import urllib.parse
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx
from deepgram import AsyncDeepgramClient
from deepgram.core.api_error import ApiError
from deepgram.environment import DeepgramClientEnvironment
from websockets.exceptions import InvalidHandshake

from common import deepgram_tls
from common.consul import ConsulSettings
from common.consul_resolver import ConsulResolver
from common.context import tenant_id
from common.discovery import Resolver
from common.providers import (
    EnvKeySource,
    KeySource,
    ProviderError,
    ProviderKey,
    ProviderLimiter,
    ProviderSpec,
    retry_after_s,
)
from stt_svc.providers.base import ENGINE_RATE, RecognitionOptions
from stt_svc.providers.deepgram_stream import DeepgramStream, StreamTimings
from stt_svc.providers.endpoints import EndpointBalancer

# Deepgram's `redact` values for an agent that redacts PII (`numbers` would also eat times,
# prices and order numbers the agent needs; stored transcripts are redacted in full anyway).
REDACT = ("pci", "ssn")

if TYPE_CHECKING:
    from stt_svc.app import Settings

log = logging.getLogger(__name__)

CLOUD_URL = "wss://api.deepgram.com"
KEY_ENV = "DEEPGRAM_API_KEY"
MAX_CLIENTS = 64  # SDK clients cached per (URL, key): tenants with their own keys


@dataclass(frozen=True, slots=True)
class DeepgramConfig:
    """How this process talks to Deepgram (from stt_svc settings)."""

    urls: tuple[str, ...] = ()  # empty: Deepgram's cloud
    # Self-hosted instances registered in Consul under this logical name (``deepgram`` ->
    # ``voiceai-deepgram``), passing checks only; wins over ``urls`` while it has any.
    consul_service: str = ""
    consul_scheme: str = "http"  # how to reach a registered instance (http -> ws, https -> wss)
    model: str = "nova-3"
    smart_format: bool = True
    utterance_end_ms: int = 1000  # Deepgram's minimum
    max_streams_per_key: int = 50  # pay-as-you-go streaming limit; divide by replicas
    queue_timeout_s: float = 0.05
    connect_timeout_s: float = 3.0
    first_result_timeout_s: float = 3.0
    inactivity_timeout_s: float = 10.0
    keepalive_s: float = 4.0
    failure_penalty_s: float = 5.0

    @property
    def self_hosted(self) -> bool:
        return bool(self.urls) or bool(self.consul_service)


def websocket_base(url: str) -> str:
    """``https://host`` / ``http://host:8080`` / ``wss://host`` -> the websocket base, no slash."""
    url = url.strip().rstrip("/")
    for http, ws in (("https://", "wss://"), ("http://", "ws://")):
        if url.startswith(http):
            return ws + url[len(http) :]
    if not url.startswith(("ws://", "wss://")):
        raise ValueError(f"Deepgram URL {shown(url)!r} must start with ws://, wss://, http:// or https://")
    return url


def shown(url: str) -> str:
    """``url`` fit for messages and logs: a password in it (basic auth at a proxy) removed."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    user = f"{parts.username}@" if parts.username else ""
    return urllib.parse.urlunsplit(parts._replace(netloc=user + host))


def _retry_after(error: ApiError) -> float | None:
    """Retry-After of the refused handshake (the SDK keeps it only on the exception it wraps)."""
    return retry_after_s(getattr(error.__context__, "headers", None))


class DeepgramRecognizer:
    """Deepgram listen streams for every tenant of this process: clients, caps and endpoints."""

    name = "deepgram"

    def __init__(
        self,
        config: DeepgramConfig,
        keys: KeySource,
        resolver: Resolver | None = None,
    ) -> None:
        if config.consul_service and resolver is None:
            raise ValueError("a Consul service for Deepgram needs a resolver (CONSUL_HTTP_ADDR)")
        self.config = config
        self._keys = keys
        self._resolver = resolver
        # At start, not on the loop when the first wss stream opens; the SDK's (unused) HTTP
        # client shares it too, so creating that costs no CA-bundle load either.
        self._tls = deepgram_tls.install()
        self.endpoints = EndpointBalancer(
            [websocket_base(u) for u in config.urls] or [CLOUD_URL], config.failure_penalty_s
        )
        self.limiter = ProviderLimiter("stt", "deepgram", config.max_streams_per_key, config.queue_timeout_s)
        self._clients: OrderedDict[tuple[str, str], AsyncDeepgramClient] = OrderedDict()
        self._http: httpx.AsyncClient | None = None

    @property
    def attempts(self) -> int:
        """How many times a chain may open this provider for one stream (once per URL)."""
        return len(self.endpoints.urls)

    def _client(self, url: str, key: ProviderKey | None) -> AsyncDeepgramClient:
        cache_key = (url, key.fingerprint if key else "")
        client = self._clients.get(cache_key)
        if client is None:
            # The SDK insists on an httpx client; websockets never use it, so one is shared.
            self._http = self._http or httpx.AsyncClient(verify=self._tls or True)
            env = DeepgramClientEnvironment(base=url, production=url, agent=url, agent_rest=url)
            client = AsyncDeepgramClient(
                api_key=key.value if key else "", environment=env, httpx_client=self._http
            )
            self._clients[cache_key] = client
            if len(self._clients) > MAX_CLIENTS:
                self._clients.popitem(last=False)
        else:
            self._clients.move_to_end(cache_key)
        return client

    def _params(self, options: RecognitionOptions) -> dict[str, Any]:
        model = options.model or self.config.model
        params: dict[str, Any] = {
            "model": model,
            "language": options.language or "en-US",
            "encoding": "linear16",
            "sample_rate": ENGINE_RATE,
            "channels": 1,
            # Interim results are needed for UtteranceEnd; they are dropped if not asked for.
            "interim_results": "true",
            "vad_events": "true",
            "endpointing": options.endpointing_ms,
            "utterance_end_ms": self.config.utterance_end_ms,
            "smart_format": "true" if self.config.smart_format else "false",
        }
        if options.keyterms and model.startswith("nova-3"):
            params["keyterm"] = list(options.keyterms)  # the SDK repeats the parameter per term
        if options.redact_pii:  # card numbers and SSNs; phones/e-mails are redacted when stored
            params["redact"] = list(REDACT)
        return params

    async def open(self, options: RecognitionOptions) -> DeepgramStream:
        key = await self._keys.key_for(KEY_ENV, tenant_id())
        if key is None and not self.config.self_hosted:
            raise ProviderError(
                f"no Deepgram key for this tenant: set {KEY_ENV} (or {KEY_ENV}__<TENANT>)", kind="no_key"
            )
        stack = contextlib.AsyncExitStack()
        try:
            await stack.enter_async_context(self.limiter.slot(key))
            await self._discover()
            url = self.endpoints.acquire()
            stack.callback(self.endpoints.release, url)
            client = self._client(url, key)
            label = f"{shown(url)} (key {key.label}/{key.fingerprint})" if key else shown(url)
            # Errors are built here and raised below, outside the handlers: the SDK's ApiError
            # (request headers, the refused response) is then not kept as their context.
            failure: ProviderError | None = None
            try:
                async with asyncio.timeout(self.config.connect_timeout_s):
                    socket = await stack.enter_async_context(
                        client.listen.v1.connect(**self._params(options))
                    )
            except ApiError as e:
                failure = self._refused(url, label, e.status_code or 0, _retry_after(e))
            except TimeoutError:
                self.endpoints.mark_failed(url)
                failure = ProviderError(
                    f"Deepgram at {label} did not accept the stream within {self.config.connect_timeout_s:g} s",
                    kind="timeout",
                )
            except (OSError, InvalidHandshake) as e:
                self.endpoints.mark_failed(url)
                failure = ProviderError(
                    f"could not connect to Deepgram at {label}: {type(e).__name__}", kind="connect"
                )
            if failure is not None:
                raise failure
            timings = StreamTimings(
                self.config.first_result_timeout_s, self.config.inactivity_timeout_s, self.config.keepalive_s
            )
            stream = DeepgramStream(socket, stack, options, timings, lambda: self.endpoints.mark_failed(url))
            stream.key_label = key.label if key else ""  # issue 17: which key pays, for usage
            return stream
        except BaseException:
            await stack.aclose()
            raise

    async def start_watching(self) -> None:
        """Begin the Consul watch before the first stream needs its answer."""
        watch = getattr(self._resolver, "watch", None)
        if watch is not None:
            watch(self.config.consul_service)

    async def _discover(self) -> None:
        """Take the instances Consul reports healthy now (a cached answer: no Consul round trip)."""
        if self._resolver is None:
            return
        found = await self._resolver.resolve(self.config.consul_service)
        if found:
            self.endpoints.replace(
                [websocket_base(f"{self.config.consul_scheme}://{e.address}") for e in found]
            )
        elif self.config.urls:  # none registered: the static URLs stand in
            self.endpoints.replace([websocket_base(u) for u in self.config.urls])
        else:
            raise ProviderError(
                f"no healthy self-hosted Deepgram instance in Consul (service {self.config.consul_service!r})",
                kind="no_instances",
            )

    def _refused(self, url: str, label: str, status: int, retry_after_s: float | None) -> ProviderError:
        if status == 429:
            if self.config.self_hosted:
                self.endpoints.mark_failed(url, retry_after_s)
            after = f"; retry after {retry_after_s:g} s" if retry_after_s is not None else ""
            return ProviderError(
                f"Deepgram at {label} is rate limiting (HTTP 429){after}",
                kind="rate_limited",
                retry_after_s=retry_after_s,
            )
        if status in (401, 403):
            return ProviderError(
                f"Deepgram at {label} rejected the API key (HTTP {status}); check {KEY_ENV}", kind="auth"
            )
        if status >= 500:
            self.endpoints.mark_failed(url)
            return ProviderError(f"Deepgram at {label} failed (HTTP {status})", kind="server_error")
        return ProviderError(
            f"Deepgram at {label} refused the stream (HTTP {status}): check the model, language and keyterms",
            kind="bad_request",
        )

    async def aclose(self) -> None:
        close = getattr(self._resolver, "aclose", None)
        if close is not None:
            await close()
        if self._http is not None:
            await self._http.aclose()


# ---------------------------------------------------------------------------- registration


def deepgram_configured(settings: Settings, env: EnvKeySource) -> bool:
    """Self-hosted URLs or a Consul service, the deployment's key or any tenant's own key enable
    Deepgram."""
    return bool(settings.deepgram_urls() or settings.stt_deepgram_consul_service) or env.has_any(KEY_ENV)


def deepgram_resolver(settings: Settings, consul: ConsulSettings | None) -> ConsulResolver | None:
    """The Consul watch of self-hosted Deepgram instances (started when the host serves), or None."""
    service = settings.stt_deepgram_consul_service
    if not service:
        return None
    consul = consul if consul is not None else ConsulSettings()
    if not consul.enabled:
        raise ValueError(
            f"VOICEAI_STT_DEEPGRAM_CONSUL_SERVICE={service!r} needs Consul: set CONSUL_HTTP_ADDR"
        )
    return ConsulResolver(consul)


def build_deepgram(
    settings: Settings, keys: KeySource, /, consul: ConsulSettings | None = None, **_: Any
) -> DeepgramRecognizer:
    """The Deepgram recognizer from stt_svc's settings; ValueError names a bad variable."""
    for url in settings.deepgram_urls():
        try:
            websocket_base(url)
        except ValueError as e:
            raise ValueError(f"VOICEAI_STT_DEEPGRAM_URLS: {e}") from None
    config = DeepgramConfig(
        urls=settings.deepgram_urls(),
        model=settings.stt_deepgram_model,
        smart_format=settings.stt_deepgram_smart_format,
        utterance_end_ms=settings.stt_deepgram_utterance_end_ms,
        max_streams_per_key=settings.stt_deepgram_max_streams,
        queue_timeout_s=settings.stt_deepgram_queue_timeout_s,
        connect_timeout_s=settings.stt_deepgram_connect_timeout_s,
        first_result_timeout_s=settings.stt_deepgram_first_result_timeout_s,
        inactivity_timeout_s=settings.stt_deepgram_inactivity_timeout_s,
        keepalive_s=settings.stt_deepgram_keepalive_s,
        failure_penalty_s=settings.stt_deepgram_failure_penalty_s,
        consul_service=settings.stt_deepgram_consul_service,
        consul_scheme=settings.stt_deepgram_consul_scheme,
    )
    return DeepgramRecognizer(config, keys, deepgram_resolver(settings, consul))


PROVIDER: ProviderSpec[Settings, DeepgramRecognizer] = ProviderSpec(
    "deepgram", deepgram_configured, build_deepgram
)
