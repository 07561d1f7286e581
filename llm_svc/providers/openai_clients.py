"""A bounded pool of SDK clients, one per API key, so connections are reused across streams.

Each client holds an HTTP connection pool; keeping one per key (a tenant's own key or the
deployment's) reuses warm connections, and the bound keeps a deployment with many tenant keys
from holding sockets for all of them. The least recently used client goes first, but never
while a stream uses it: it is closed when its last stream ends.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from typing import Generic, Protocol, TypeVar


class _Closable(Protocol):
    async def close(self) -> None: ...


C = TypeVar("C", bound=_Closable)


class _Entry(Generic[C]):
    __slots__ = ("client", "evicted", "users")

    def __init__(self, client: C) -> None:
        self.client = client
        self.users = 0
        self.evicted = False


class ClientPool(Generic[C]):
    """``lease(api_key)`` yields the key's client, creating it with ``factory`` on first use."""

    def __init__(self, factory: Callable[[str], C], max_clients: int = 32) -> None:
        if max_clients < 1:
            raise ValueError("max_clients must be at least 1")
        self._factory = factory
        self._max = max_clients
        self._entries: OrderedDict[str, _Entry[C]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    @contextlib.asynccontextmanager
    async def lease(self, api_key: str) -> AsyncIterator[C]:
        fp = hashlib.sha256(api_key.encode()).hexdigest()  # the pool never keeps keys as dict keys
        entry = self._entries.get(fp)
        if entry is None:
            entry = self._entries[fp] = _Entry(self._factory(api_key))
        self._entries.move_to_end(fp)
        entry.users += 1
        try:
            await self._evict()
            yield entry.client
        finally:
            entry.users -= 1
            if entry.evicted and entry.users == 0:
                await entry.client.close()

    async def _evict(self) -> None:
        while len(self._entries) > self._max:
            _, old = self._entries.popitem(last=False)
            old.evicted = True
            if old.users == 0:
                await old.client.close()

    async def aclose(self) -> None:
        entries, self._entries = list(self._entries.values()), OrderedDict()
        for entry in entries:
            entry.evicted = True
            if entry.users == 0:
                await entry.client.close()
