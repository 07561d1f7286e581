"""Conversation history of a call, behind a small store interface.

In memory here; ``redis_history.RedisConversationStore`` (any gateway instance can serve the
next turn) implements the same Protocol.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One utterance: the caller's words or what the agent actually said."""

    role: Literal["user", "assistant"]
    text: str
    turn: int
    interrupted: bool = False


class ConversationStore(Protocol):
    """A call's history, keyed by tenant and call: call ids are unique per tenant only."""

    async def append(self, tenant_id: str, call_id: str, entry: HistoryEntry) -> None: ...

    async def history(self, tenant_id: str, call_id: str) -> list[HistoryEntry]: ...

    async def drop(self, tenant_id: str, call_id: str) -> None: ...


class InMemoryConversationStore:
    """Per-process history, keyed by tenant and call id. Entries are dropped when the call ends."""

    def __init__(self, max_entries_per_call: int = 200) -> None:
        self._calls: dict[tuple[str, str], list[HistoryEntry]] = {}
        self._max = max_entries_per_call

    async def append(self, tenant_id: str, call_id: str, entry: HistoryEntry) -> None:
        entries = self._calls.setdefault((tenant_id, call_id), [])
        entries.append(entry)
        if len(entries) > self._max:
            del entries[: len(entries) - self._max]

    async def history(self, tenant_id: str, call_id: str) -> list[HistoryEntry]:
        return list(self._calls.get((tenant_id, call_id), ()))

    async def drop(self, tenant_id: str, call_id: str) -> None:
        self._calls.pop((tenant_id, call_id), None)

    def __len__(self) -> int:
        return len(self._calls)
