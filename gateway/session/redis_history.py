"""Conversation history in Redis, so any gateway (or llm_svc) instance can serve a call's next turn.

Per call: a list of entries, trimmed to the newest ``max_entries`` on every append, and a hash
holding the highest turn number seen. Both expire ``ttl_s`` after the call's last write, so a
call whose gateway died without ``drop`` does not linger. Keys are namespaced by tenant
(``<prefix>:t:{<tenant>}:call:<call_id>``); call ids are only unique within a tenant.

An entry is compact JSON ``[role, turn, interrupted, text]`` (role "u" or "a"), the text stored
verbatim: it is data, never interpreted.
"""

from __future__ import annotations

import json
from typing import Protocol

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from common.errors import VoiceAIError
from common.redis_conn import tenant_key, translate
from gateway.session.history import HistoryEntry

# KEYS list, meta; ARGV entry, max entries, ttl ms, turn. One round trip per append.
_APPEND = """
redis.call('RPUSH', KEYS[1], ARGV[1])
redis.call('LTRIM', KEYS[1], -tonumber(ARGV[2]), -1)
local turn = tonumber(redis.call('HGET', KEYS[2], 'turn') or -1)
if tonumber(ARGV[4]) > turn then redis.call('HSET', KEYS[2], 'turn', ARGV[4]) end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return 1
"""

_ROLES = {"user": "u", "assistant": "a"}
_ROLE_NAMES = {v: k for k, v in _ROLES.items()}


def encode_entry(entry: HistoryEntry) -> bytes:
    """One history entry as stored in Redis."""
    return json.dumps(
        [_ROLES[entry.role], entry.turn, int(entry.interrupted), entry.text],
        ensure_ascii=False,
        separators=(",", ":"),
    ).encode()


def decode_entry(data: bytes | str) -> HistoryEntry:
    """A history entry from its Redis form."""
    try:
        role, turn, interrupted, text = json.loads(data)
        return HistoryEntry(_ROLE_NAMES[role], text, int(turn), bool(interrupted))  # type: ignore[arg-type]
    except (ValueError, KeyError, TypeError) as error:
        raise VoiceAIError(
            "a stored conversation entry is unreadable; it was written by another version"
        ) from error


def _raw(item: bytes | str) -> bytes:
    return item if isinstance(item, bytes) else item.encode()


class HistoryCodec(Protocol):
    """Seals entries at rest (gateway.history_crypto.HistorySealer)."""

    async def seal(self, tenant_id: str, call_id: str, data: bytes) -> bytes: ...
    async def open(self, tenant_id: str, call_id: str, sealed: bytes) -> bytes: ...


class RedisConversationStore:
    """The gateway's ``ConversationStore`` in Redis: bounded, expiring, shared by instances."""

    def __init__(
        self, redis: aioredis.Redis, *, prefix: str, ttl_s: float = 3600.0, max_entries: int = 200
    ) -> None:
        self._redis = redis
        self._prefix = prefix
        self._ttl_ms = int(ttl_s * 1000)
        self._max = max_entries
        self._append = redis.register_script(_APPEND)
        self.codec: HistoryCodec | None = None  # data protection: entries sealed when set

    def _keys(self, tenant_id: str, call_id: str) -> list[str]:
        meta = tenant_key(self._prefix, tenant_id, "call", call_id)
        return [meta + ":h", meta]

    async def append(self, tenant_id: str, call_id: str, entry: HistoryEntry) -> None:
        try:
            await self._append(
                keys=self._keys(tenant_id, call_id),
                args=[await self._encode(tenant_id, call_id, entry), self._max, self._ttl_ms, entry.turn],
            )
        except RedisError as error:
            raise translate(error, "history_append") from error

    async def history(self, tenant_id: str, call_id: str) -> list[HistoryEntry]:
        try:
            raw = await self._redis.lrange(self._keys(tenant_id, call_id)[0], 0, -1)
        except RedisError as error:
            raise translate(error, "history_read") from error
        if self.codec is not None:
            raw = [await self.codec.open(tenant_id, call_id, _raw(item)) for item in raw]
        return [decode_entry(item) for item in raw]

    async def _encode(self, tenant_id: str, call_id: str, entry: HistoryEntry) -> bytes:
        data = encode_entry(entry)
        return data if self.codec is None else await self.codec.seal(tenant_id, call_id, data)

    async def last_turn(self, tenant_id: str, call_id: str) -> int:
        """The highest turn number recorded for the call; -1 when none (or expired)."""
        try:
            turn = await self._redis.hget(self._keys(tenant_id, call_id)[1], "turn")
        except RedisError as error:
            raise translate(error, "history_read") from error
        return -1 if turn is None else int(turn)

    async def drop(self, tenant_id: str, call_id: str) -> None:
        try:
            await self._redis.delete(*self._keys(tenant_id, call_id))
        except RedisError as error:
            raise translate(error, "history_drop") from error
