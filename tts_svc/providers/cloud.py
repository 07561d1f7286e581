"""What the cloud TTS adapters share: deadlines, SDK clients per key, error translation, PCM framing."""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar

from common.providers import ProviderError, ProviderKey, retry_after_s

C = TypeVar("C")


@dataclass(frozen=True, slots=True)
class Deadlines:
    """Every provider call is bounded: a stuck provider becomes ProviderError(kind="timeout")."""

    connect_s: float = 3.0  # TCP + TLS + HTTP/websocket handshake
    # Text sent -> first audio of the piece (HTTP providers: from the request, connection setup
    # included when the pool has none open).
    first_audio_s: float = 3.0
    idle_s: float = 3.0  # between two chunks of one piece
    close_s: float = 1.0  # polite close (Clear/Close) before the connection is dropped


class _Entry(Generic[C]):
    __slots__ = ("client", "evicted", "users")

    def __init__(self, client: C) -> None:
        self.client = client
        self.users = 0
        self.evicted = False


class ClientCache(Generic[C]):
    """SDK clients per key fingerprint, least recently used evicted beyond ``size``.

    A client holds connection pools; one per key keeps tenants' keys apart without building
    a client per request. ``close`` releases an evicted client's resources, but not while a
    ``lease`` holds it: closing the pool under a request in flight would break another
    tenant's stream, so the last lease closes it.
    """

    def __init__(
        self, build: Callable[[ProviderKey | None], C], close: Callable[[C], Awaitable[None]], size: int = 32
    ) -> None:
        self._build = build
        self._close = close
        self._size = size
        self._clients: OrderedDict[str, _Entry[C]] = OrderedDict()

    def _entry(self, key: ProviderKey | None) -> _Entry[C]:
        fingerprint = key.fingerprint if key else ""
        entry = self._clients.get(fingerprint)
        if entry is None:
            entry = self._clients[fingerprint] = _Entry(self._build(key))
        self._clients.move_to_end(fingerprint)
        return entry

    async def get(self, key: ProviderKey | None) -> C:
        """The key's client, unleased: for clients whose ``close`` cannot break a request."""
        entry = self._entry(key)
        await self._evict()
        return entry.client

    @contextlib.asynccontextmanager
    async def lease(self, key: ProviderKey | None) -> AsyncIterator[C]:
        """The key's client, kept open until the body is done even if evicted meanwhile."""
        entry = self._entry(key)
        entry.users += 1
        try:
            await self._evict()
            yield entry.client
        finally:
            entry.users -= 1
            if entry.evicted and entry.users == 0:
                await self._close(entry.client)

    async def _evict(self) -> None:
        while len(self._clients) > self._size:
            _, old = self._clients.popitem(last=False)
            await self._retire(old)

    async def _retire(self, entry: _Entry[C]) -> None:
        entry.evicted = True
        if entry.users == 0:
            await self._close(entry.client)

    def __len__(self) -> int:
        return len(self._clients)

    async def aclose(self) -> None:
        while self._clients:
            _, old = self._clients.popitem()
            await self._retire(old)


def status_error(
    provider: str, status: int, headers: Mapping[str, str] | None, key: ProviderKey | None
) -> ProviderError:
    """A provider's HTTP status (a refused request or websocket handshake) as a ProviderError.

    Messages name the key by label only. All of these let the chain fall through: a refused
    key or a provider outage is not something the caller can fix in its request.
    """
    label = key.label if key else "no"
    if status == 429:
        wait = retry_after_s(headers)
        hint = f"; it asks to retry after {wait:g} s" if wait is not None else ""
        return ProviderError(
            f"{provider} is rate limiting the {label} key (HTTP 429){hint}",
            kind="rate_limited",
            retry_after_s=wait,
        )
    if status in (401, 403):
        return ProviderError(
            f"{provider} refused the {label} key (HTTP {status}); check the key in the environment",
            kind="auth",
        )
    if status >= 500:
        return ProviderError(
            f"{provider} failed (HTTP {status})", kind="server_error", retry_after_s=retry_after_s(headers)
        )
    return ProviderError(f"{provider} refused the request (HTTP {status})", kind="rejected")


class EvenBytes:
    """Re-frames a byte stream into whole PCM16 samples (HTTP chunking may split a sample)."""

    __slots__ = ("_odd",)

    def __init__(self) -> None:
        self._odd = b""

    def feed(self, data: bytes) -> bytes:
        if self._odd:
            data, self._odd = self._odd + data, b""
        if len(data) % 2:
            data, self._odd = data[:-1], data[-1:]
        return data
