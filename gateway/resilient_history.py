"""Conversation history that survives a Redis outage: the call's in-process copy.

Every entry is kept in the call's own process as well as written to Redis. While Redis cannot
be reached the call goes on from the in-process copy (``history`` reads it; appends queue
there), and the call's history is written back whole, in order, at its first append after Redis
answers again (a restarted Redis may have lost what it had). The copy is bounded like the Redis list and dropped when the call
ends. Only ``Unavailable`` (Redis down or overloaded) is absorbed; other errors still fail.
"""

from __future__ import annotations

import logging
import time
from collections import deque

from prometheus_client import Counter

from common.errors import Unavailable
from gateway.session.history import ConversationStore, HistoryEntry

log = logging.getLogger(__name__)

HISTORY_FALLBACKS = Counter(
    "voiceai_history_fallback_total", "History operations served from the in-process copy", ["operation"]
)


class _Call:
    __slots__ = ("entries", "unsynced", "warned")
    # ``warned`` also means "Redis failed for this call": on its return the whole in-process
    # copy is written again, since a restarted Redis may have lost what it had.

    def __init__(self, max_entries: int) -> None:
        self.entries: deque[HistoryEntry] = deque(maxlen=max_entries)
        self.unsynced: deque[HistoryEntry] = deque(maxlen=max_entries)
        self.warned = False


class FallbackConversationStore:
    """A ConversationStore over another (Redis) with each call's in-process copy as fallback."""

    def __init__(self, inner: ConversationStore, max_entries: int = 200, retry_after_s: float = 1.0) -> None:
        self._inner = inner
        self._max = max_entries
        self._calls: dict[tuple[str, str], _Call] = {}
        # After a failure, Redis is not asked again for this long: live turns do not each wait
        # out a connect timeout while it is down.
        self._retry_after_s = retry_after_s
        self._down_until = 0.0

    def _down(self) -> bool:
        return time.monotonic() < self._down_until

    def _failed(self) -> None:
        self._down_until = time.monotonic() + self._retry_after_s

    def _call(self, tenant_id: str, call_id: str) -> _Call:
        key = (tenant_id, call_id)
        call = self._calls.get(key)
        if call is None:
            call = self._calls[key] = _Call(self._max)
        return call

    async def append(self, tenant_id: str, call_id: str, entry: HistoryEntry) -> None:
        """Keeps ``entry`` in process, then writes it (and any entries Redis missed) through."""
        call = self._call(tenant_id, call_id)
        call.entries.append(entry)
        call.unsynced.append(entry)
        try:
            if self._down():
                raise Unavailable("the state store (Redis) failed moments ago")
            if call.warned:  # back after an outage: Redis may have restarted empty
                await self._inner.drop(tenant_id, call_id)
                call.unsynced = deque(call.entries, maxlen=self._max)
            while call.unsynced:
                await self._inner.append(tenant_id, call_id, call.unsynced[0])
                call.unsynced.popleft()
        except Unavailable as e:
            self._failed()
            HISTORY_FALLBACKS.labels("append").inc()
            if not call.warned:
                call.warned = True
                log.warning("history kept in process until the state store answers again: %s", e.message)
            return
        if call.warned:
            call.warned = False
            log.warning("history written back to the state store")

    async def history(self, tenant_id: str, call_id: str) -> list[HistoryEntry]:
        """Redis's history, or the in-process copy while Redis is behind or down."""
        call = self._calls.get((tenant_id, call_id))
        if call is not None and (call.unsynced or self._down()):
            HISTORY_FALLBACKS.labels("history").inc()
            return list(call.entries)
        try:
            return await self._inner.history(tenant_id, call_id)
        except Unavailable:
            self._failed()
            HISTORY_FALLBACKS.labels("history").inc()
            return list(call.entries) if call is not None else []

    async def drop(self, tenant_id: str, call_id: str) -> None:
        """Forgets the call here and in Redis (whose keys expire by themselves if it is down)."""
        self._calls.pop((tenant_id, call_id), None)
        try:
            await self._inner.drop(tenant_id, call_id)
        except Unavailable:
            HISTORY_FALLBACKS.labels("drop").inc()


__all__ = ["FallbackConversationStore"]
