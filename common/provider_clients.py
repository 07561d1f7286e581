"""SDK clients per API key for the cloud-provider adapters of every service.

A client holds connection pools; one per key (a tenant's own or the deployment's) reuses warm
connections and keeps tenants' keys apart, and the bound keeps a deployment with many tenant
keys from holding sockets for all of them. Keys are known here only by fingerprint.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Generic, TypeVar

from common.providers import ProviderKey

C = TypeVar("C")


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
