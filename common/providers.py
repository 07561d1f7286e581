"""What every cloud-provider adapter shares: keys, concurrency caps, chains and their metrics.

Keys come from one injected ``KeySource`` (providers never read the environment). The default,
``EnvKeySource``, reads the mapping the service's entry point hands it: ``DEEPGRAM_API_KEY`` is
the deployment's key; a tenant with its own contract sets ``DEEPGRAM_API_KEY__<TENANT>`` (tenant
id upper-cased, ``-`` as ``_``), which then serves that tenant's streams alone. A tenant key
store (BYOK) implements the same Protocol and falls back to another source. Keys are never
logged: a key is known to logs and metrics only by ``key_label`` (``default`` or ``tenant``),
and to the caps by a hash.

Caps: providers limit concurrent streams per API key (Deepgram pay-as-you-go: 50 streaming STT,
40-80 TTS websockets). ``ProviderLimiter`` holds one counter per (provider, key) and admits a
stream when a slot is free, waiting up to ``queue_timeout_s`` for one; a stream that cannot get
a slot raises ``ProviderBusy`` so the chain moves to the next provider (or the client gets
RESOURCE_EXHAUSTED when there is none). The cap is per process: size it as the provider's limit
divided by the replicas sharing the key.

Chains: a request names providers in order (``["deepgram", "local"]``); ``resolve_chain``
checks the names and drops those this instance has not configured, so a chain degrades to what
is available rather than failing on a missing key.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import hashlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar, runtime_checkable

from prometheus_client import Counter, Gauge, Histogram

from common import telemetry
from common.errors import EngineError, FailedPrecondition, InvalidArgument, ResourceExhausted
from common.settings import environment

log = logging.getLogger(__name__)
T = TypeVar("T")

IN_USE = Gauge(
    "voiceai_provider_streams_in_use",
    "Provider streams/requests holding a concurrency slot",
    ["service", "provider"],
)
WAITING = Gauge(
    "voiceai_provider_streams_waiting", "Provider streams queued for a slot", ["service", "provider"]
)
CAPACITY = Gauge(
    "voiceai_provider_stream_capacity", "Concurrency cap per provider key", ["service", "provider"]
)
QUEUE_WAIT = Histogram(
    "voiceai_provider_queue_wait_seconds",
    "Time a provider stream waited for a concurrency slot",
    ["service", "provider"],
    buckets=(0.001, 0.005, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
REJECTED = Counter(
    "voiceai_provider_over_cap_total",
    "Provider streams refused because the provider's cap stayed full for the queueing timeout",
    ["service", "provider"],
)
FALLBACKS = Counter(
    "voiceai_provider_fallbacks_total",
    "Switches from one provider to the next in a chain",
    ["service", "from_provider", "to_provider", "reason"],
)
FAILURES = Counter(
    "voiceai_provider_failures_total",
    "Provider attempts that failed, by kind (rate_limited, server_error, timeout, disconnect, ...)",
    ["service", "provider", "kind"],
)


# Provider names each service knows, in the order documented for agent configs.
KNOWN_PROVIDERS: dict[str, tuple[str, ...]] = {
    "stt": ("local", "deepgram"),
    "llm": ("local", "openai"),
    "tts": ("local", "deepgram", "elevenlabs"),
}


class ProviderError(EngineError):
    """A provider attempt failed. ``kind`` labels metrics and logs (no tenant data);
    ``retry_after_s`` carries a provider's Retry-After; ``fallback`` says whether the next
    provider in the chain should be tried (False for errors the caller must fix)."""

    def __init__(
        self,
        message: str,
        *,
        kind: str = "error",
        retry_after_s: float | None = None,
        fallback: bool = True,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.retry_after_s = retry_after_s
        self.fallback = fallback


class ProviderBusy(ResourceExhausted):
    """A provider's concurrency cap stayed full for the queueing timeout."""


def retry_after_s(headers: Mapping[str, str] | None) -> float | None:
    """Seconds a provider asks to wait: ``retry-after-ms`` (OpenAI) or ``Retry-After`` (seconds or an
    HTTP date), header names in any case; None when absent or unreadable."""
    if not headers:
        return None
    lowered = {k.lower(): v for k, v in headers.items()}
    try:
        if (ms := lowered.get("retry-after-ms")) is not None:
            return max(0.0, float(ms) / 1000.0)
        value = lowered.get("retry-after")
        if value is None:
            return None
        try:
            return max(0.0, float(value))
        except ValueError:
            return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError, OverflowError):
        return None


# ---------------------------------------------------------------------------- keys


def tenant_env_suffix(tenant_id: str) -> str:
    """A tenant id as it appears in a per-tenant variable name (upper case, ``_`` for ``-``)."""
    return tenant_id.upper().replace("-", "_")


@dataclass(frozen=True, slots=True)
class ProviderKey:
    """A resolved API key: ``value`` is secret; ``label`` and ``fingerprint`` are safe to show."""

    value: str
    label: str  # "default" or "tenant"
    fingerprint: str  # first 12 hex of sha256(value): tells keys apart without revealing them
    base_url: str = ""  # a key's own endpoint (self-hosted, Azure); empty = the provider's default

    def __repr__(self) -> str:  # never print the secret, even in a traceback's locals
        return f"ProviderKey(label={self.label!r}, fingerprint={self.fingerprint!r})"


def provider_key(value: str, label: str, base_url: str = "") -> ProviderKey:
    """A ``ProviderKey`` for the secret ``value``, fingerprinted."""
    return ProviderKey(value, label, hashlib.sha256(value.encode()).hexdigest()[:12], base_url)


class KeySource(Protocol):
    """Where providers get API keys: the tenant's own key if it has one, else the platform
    default, else None. Injected into every cloud provider; resolved per request."""

    async def key_for(self, env_name: str, tenant_id: str) -> ProviderKey | None:
        """The key to use for ``env_name`` (e.g. ``DEEPGRAM_API_KEY``) on ``tenant_id``'s behalf."""
        ...


@runtime_checkable
class KeyHint(Protocol):
    """A key source that can tell at once, without I/O, whether a tenant may have a key (TTS
    skips keyless providers while choosing a chain, synchronously). A source without it is
    asked per stream, and a missing key is then a fallback (``no_key``)."""

    def may_have_key(self, env_name: str, tenant_id: str) -> bool:
        """False only when ``key_for`` would surely return None."""
        ...


def resolve_key(
    env_name: str, tenant_id: str = "", environ: Mapping[str, str] | None = None
) -> ProviderKey | None:
    """The tenant's own key (``<ENV_NAME>__<TENANT>``) if set, else the deployment's, else None."""
    env = environment() if environ is None else environ
    if tenant_id:
        own = env.get(f"{env_name}__{tenant_env_suffix(tenant_id)}", "").strip()
        if own:
            return provider_key(own, "tenant")
    shared = env.get(env_name, "").strip()
    return provider_key(shared, "default") if shared else None


class EnvKeySource:
    """Keys from an environment mapping handed over by the entry point (see module docstring)."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ

    def lookup(self, env_name: str, tenant_id: str = "") -> ProviderKey | None:
        """``key_for`` without awaiting (the environment is in memory)."""
        return resolve_key(env_name, tenant_id, self._environ)

    async def key_for(self, env_name: str, tenant_id: str) -> ProviderKey | None:
        """The tenant's ``<ENV_NAME>__<TENANT>``, else the deployment's ``<ENV_NAME>``, else None."""
        return resolve_key(env_name, tenant_id, self._environ)

    def may_have_key(self, env_name: str, tenant_id: str) -> bool:
        """Whether ``key_for`` finds a key (exact for the environment)."""
        return resolve_key(env_name, tenant_id, self._environ) is not None

    def has_any(self, env_name: str) -> bool:
        """The deployment's key or any tenant's own key is set: the provider is worth building."""
        prefix = env_name + "__"
        return any((k == env_name or k.startswith(prefix)) and v.strip() for k, v in self._environ.items())


# ---------------------------------------------------------------------------- registry

S_contra = TypeVar("S_contra", contravariant=True)
E_co = TypeVar("E_co", covariant=True)


class ProviderFactory(Protocol[S_contra, E_co]):
    """Builds a provider from its service's settings and the key source (plus service extras)."""

    def __call__(self, settings: S_contra, keys: KeySource, /, **extras: Any) -> E_co:
        """The provider, ready to serve."""
        ...


@dataclass(frozen=True, slots=True)
class ProviderSpec(Generic[S_contra, E_co]):
    """One cloud provider, declared once in its own module: its chain name, when this instance
    can run it (``configured``: a URL in the settings, or any key in the environment) and how
    to build it. Each service's ``providers.CLOUD`` lists the specs ``make_chain`` iterates."""

    name: str
    configured: Callable[[S_contra, EnvKeySource], bool]
    build: ProviderFactory[S_contra, E_co]
    # Logged when the default chain names the provider but this instance cannot run it.
    unconfigured_hint: str = ""


def load_specs(paths: Sequence[str]) -> list[ProviderSpec[Any, Any]]:
    """The ``ProviderSpec``s named by "module:ATTR" paths (imported only when a chain is built,
    so importing a service's providers package does not load every SDK)."""
    from common import registry

    specs = [registry.load(path, {}) for path in paths]
    for path, spec in zip(paths, specs, strict=True):
        if not isinstance(spec, ProviderSpec):
            raise TypeError(f"{path} is not a ProviderSpec")
    return specs


# ---------------------------------------------------------------------------- caps


class _Slots:
    """A counting semaphore whose waiters give up after a timeout (FIFO, no lost wakeups)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.in_use = 0
        self._waiters: list[asyncio.Future[None]] = []

    async def acquire(self, timeout_s: float) -> bool:
        if self.in_use < self.capacity and not self._waiters:
            self.in_use += 1
            return True
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            await asyncio.wait_for(asyncio.shield(fut), timeout_s)
            return True
        except TimeoutError:
            # Granted in the same tick it timed out: keep the slot.
            return fut.done() and not fut.cancelled()
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release()  # granted, but our caller went away: pass the slot on
            raise
        finally:
            if fut in self._waiters:
                self._waiters.remove(fut)
            if not fut.done():
                fut.cancel()

    def release(self) -> None:
        while self._waiters:
            fut = self._waiters.pop(0)
            if not fut.done():
                fut.set_result(None)  # the slot passes straight to the waiter
                return
        self.in_use -= 1


class ProviderLimiter:
    """Concurrency cap per (provider, key) for one service process (see module docstring)."""

    def __init__(self, service: str, provider: str, capacity: int, queue_timeout_s: float = 0.05) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.service = service
        self.provider = provider
        self.capacity = capacity
        self.queue_timeout_s = queue_timeout_s
        self._slots: dict[str, _Slots] = {}
        CAPACITY.labels(service, provider).set(capacity)

    def in_use(self, key: ProviderKey | None = None) -> int:
        slots = self._slots.get(key.fingerprint if key else "")
        return slots.in_use if slots else 0

    @contextlib.asynccontextmanager
    async def slot(self, key: ProviderKey | None = None) -> AsyncIterator[None]:
        """Hold one slot for the body; raises ``ProviderBusy`` if none frees up in time."""
        slots = self._slots.setdefault(key.fingerprint if key else "", _Slots(self.capacity))
        started = time.perf_counter()
        WAITING.labels(self.service, self.provider).inc()
        try:
            got = await slots.acquire(self.queue_timeout_s)
        finally:
            WAITING.labels(self.service, self.provider).dec()
        QUEUE_WAIT.labels(self.service, self.provider).observe(time.perf_counter() - started)
        if not got:
            REJECTED.labels(self.service, self.provider).inc()
            raise ProviderBusy(
                f"{self.provider} is at its concurrency cap ({self.capacity} streams per key on this"
                f" instance); retry shortly or add a fallback provider",
                retry_after_s=1.0,
                quota_subject=f"{self.service}.{self.provider}.concurrent_streams",
            )
        IN_USE.labels(self.service, self.provider).inc()
        try:
            yield
        finally:
            IN_USE.labels(self.service, self.provider).dec()
            slots.release()


# ---------------------------------------------------------------------------- closing

_CLOSING: set[asyncio.Task[None]] = set()  # closes whose callers went away: held until done


class CloseOnce:
    """An owner's ``aclose``: runs ``close`` once and to its end, even when the caller that
    started it is cancelled (a client hanging up while a failed provider is being closed).

    A close cut short would leave the provider connection open and its cap slot taken, and a
    later ``aclose`` would find the owner already marked closed: every caller awaits the same
    task, and a cancelled caller leaves it running (its steps are bounded by their deadlines).
    """

    __slots__ = ("_close", "_name", "_task")

    def __init__(self, close: Callable[[], Awaitable[None]], name: str) -> None:
        self._close = close
        self._name = name
        self._task: asyncio.Task[None] | None = None

    @property
    def started(self) -> bool:
        return self._task is not None

    def start(self) -> asyncio.Task[None]:
        """Begin the close now (no await: nothing can cancel it before it starts)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(_run(self._close), name=self._name)
            _CLOSING.add(self._task)
            self._task.add_done_callback(_CLOSING.discard)
        return self._task

    async def __call__(self) -> None:
        await asyncio.shield(self.start())


async def _run(close: Callable[[], Awaitable[None]]) -> None:
    await close()


# ---------------------------------------------------------------------------- chains


@dataclass(frozen=True, slots=True)
class Link(Generic[T]):
    """One provider of a resolved chain."""

    name: str
    engine: T


def resolve_chain(
    service: str,
    requested: Sequence[str],
    default: Sequence[str],
    known: Sequence[str],
    available: Mapping[str, T],
) -> list[Link[T]]:
    """The chain a request runs on: its own list (or the service default), names checked against
    ``known``, providers this instance has not configured dropped. Raises ``InvalidArgument`` for an
    unknown name and ``FailedPrecondition`` when nothing in the chain is configured here."""
    names = [n.strip().lower() for n in (requested or default) if n.strip()]
    field = "config.providers" if requested else "the service's default provider chain"
    for n in names:
        if n not in known:
            raise InvalidArgument(f"{field}: unknown {service} provider {n[:40]!r}; use {', '.join(known)}")
    seen: set[str] = set()
    chain: list[Link[T]] = []
    for n in names:
        if n in seen:
            continue
        seen.add(n)
        if n in available:
            chain.append(Link(n, available[n]))
    if not chain:
        raise FailedPrecondition(
            f"none of the {service} providers {', '.join(names) or '(none)'} is configured on this"
            f" instance (configured: {', '.join(sorted(available)) or 'none'}); set the provider's"
            " API key or use another provider"
        )
    return chain


def failure_kind(error: BaseException) -> str:
    """A short label for ``error`` in metrics and logs (no tenant data)."""
    if isinstance(error, ProviderError):
        return error.kind
    if isinstance(error, ProviderBusy):
        return "over_cap"
    if isinstance(error, TimeoutError):
        return "timeout"
    return type(error).__name__


def record_fallback(service: str, failed: str, to: str, error: BaseException) -> None:
    """Count and log one switch (the error text is the provider's, never tenant data)."""
    kind = failure_kind(error)
    FALLBACKS.labels(service, failed, to, kind).inc()
    telemetry.span_event("voiceai.provider_fallback", service=service, failed=failed, to=to, reason=kind)
    log.warning("%s provider %s failed (%s: %s); falling back to %s", service, failed, kind, error, to)


def record_failure(service: str, provider: str, error: BaseException) -> None:
    """Count one failed provider attempt by kind."""
    FAILURES.labels(service, provider, failure_kind(error)).inc()


def may_fall_back(error: BaseException) -> bool:
    """Whether the next provider should be tried after ``error`` (a provider that refuses the
    options, e.g. a language it lacks, may still be followed by one that has them)."""
    if isinstance(error, ProviderError):
        return error.fallback
    return isinstance(error, Exception)
