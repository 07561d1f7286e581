"""Conversation history in a real Redis: any instance serves the next turn, text comes back
verbatim, the list is bounded, the TTL refreshes on every write, tenants are isolated, and a
Redis outage is a clear UNAVAILABLE."""

from __future__ import annotations

import asyncio
import uuid

import pytest
import redis.asyncio as aioredis
from hypothesis import given, settings
from hypothesis import strategies as st

from common.errors import Unavailable
from common.redis_conn import RedisSettings, open_redis
from gateway.session.history import ConversationStore, HistoryEntry, InMemoryConversationStore
from gateway.session.redis_history import RedisConversationStore, decode_entry, encode_entry
from tests.integration.test_redis_conn import dead_redis_settings

NASTY = [
    "Robert'); DROP TABLE calls;--",
    '" OR 1=1 -- \\ \x00 \n\r\t',
    "KEYS * ; FLUSHALL\r\n*1\r\n$8\r\nFLUSHALL\r\n",
    "Grüße, 東京, مرحبا, 🙂‍↕️, e\u0301",
    "",
    "x" * 10_000,
]


def store(client: aioredis.Redis, prefix: str, **kw: float) -> RedisConversationStore:
    return RedisConversationStore(client, prefix=prefix, **kw)  # type: ignore[arg-type]


async def test_a_second_instance_serves_the_next_turn(redis_settings: RedisSettings) -> None:
    async with open_redis(redis_settings) as one, open_redis(redis_settings) as two:
        first, second = store(one, redis_settings.key_prefix), store(two, redis_settings.key_prefix)
        entries = [
            HistoryEntry("user", "What are your opening hours?", 1),
            HistoryEntry("assistant", "We open at nine", 1, interrupted=True),
        ]
        for e in entries:
            await first.append("acme", "call-1", e)
        assert await second.history("acme", "call-1") == entries
        assert await second.last_turn("acme", "call-1") == 1
        await second.append("acme", "call-1", HistoryEntry("user", "and on Sunday?", 2))
        assert [e.turn for e in await first.history("acme", "call-1")] == [1, 1, 2]
        await first.drop("acme", "call-1")
        assert await second.history("acme", "call-1") == []
        assert await second.last_turn("acme", "call-1") == -1


@pytest.mark.parametrize("text", NASTY)
async def test_text_is_stored_verbatim(
    redis_client: aioredis.Redis, redis_settings: RedisSettings, text: str
) -> None:
    s = store(redis_client, redis_settings.key_prefix)
    await s.append("acme", "call-1", HistoryEntry("user", text, 3))
    assert await s.history("acme", "call-1") == [HistoryEntry("user", text, 3)]


@settings(max_examples=200, deadline=None)
@given(
    entry=st.builds(
        HistoryEntry,
        role=st.sampled_from(["user", "assistant"]),
        text=st.text(),
        turn=st.integers(0, 10_000),
        interrupted=st.booleans(),
    )
)
def test_encoding_round_trips_any_entry_compactly(entry: HistoryEntry) -> None:
    data = encode_entry(entry)
    assert decode_entry(data) == entry
    assert len(data) <= len(entry.text.encode()) * 6 + 24


async def test_the_list_is_bounded_and_the_turn_is_the_highest_seen(
    redis_client: aioredis.Redis, redis_settings: RedisSettings
) -> None:
    s = store(redis_client, redis_settings.key_prefix, max_entries=4)
    for turn in range(10):
        await s.append("acme", "call-1", HistoryEntry("user", f"t{turn}", turn))
    await s.append("acme", "call-1", HistoryEntry("assistant", "late reply to t8", 8))  # out of order
    assert [e.text for e in await s.history("acme", "call-1")] == ["t7", "t8", "t9", "late reply to t8"]
    assert await s.last_turn("acme", "call-1") == 9


async def test_the_ttl_is_refreshed_on_every_write(
    redis_client: aioredis.Redis, redis_settings: RedisSettings
) -> None:
    s = store(redis_client, redis_settings.key_prefix, ttl_s=0.4)
    await s.append("acme", "call-1", HistoryEntry("user", "one", 1))
    await asyncio.sleep(0.25)
    await s.append("acme", "call-1", HistoryEntry("assistant", "two", 1))
    await asyncio.sleep(0.25)  # 0.5 s after the first write, 0.25 s after the last
    assert len(await s.history("acme", "call-1")) == 2
    for key in s._keys("acme", "call-1"):
        assert 0 < await redis_client.pttl(key) <= 400
    await asyncio.sleep(0.5)
    assert await s.history("acme", "call-1") == []
    assert await redis_client.exists(*s._keys("acme", "call-1")) == 0


async def test_tenants_with_the_same_call_id_never_mix(
    redis_client: aioredis.Redis, redis_settings: RedisSettings
) -> None:
    s = store(redis_client, redis_settings.key_prefix)
    await s.append("tenant-a", "call-1", HistoryEntry("user", "a's secret", 1))
    await s.append("tenant-b", "call-1", HistoryEntry("user", "b's words", 1))
    await s.drop("tenant-b", "call-1")
    assert [e.text for e in await s.history("tenant-a", "call-1")] == ["a's secret"]
    assert await s.history("tenant-b", "call-1") == []
    p = redis_settings.key_prefix
    keys = sorted([k.decode() async for k in redis_client.scan_iter(match=f"{p}:*")])
    assert keys == [f"{p}:t:{{tenant-a}}:call:call-1", f"{p}:t:{{tenant-a}}:call:call-1:h"]


async def test_the_in_memory_store_keys_by_tenant_too() -> None:
    s: ConversationStore = InMemoryConversationStore()
    await s.append("tenant-a", "call-1", HistoryEntry("user", "a", 1))
    assert await s.history("tenant-b", "call-1") == []
    await s.drop("tenant-a", "call-1")
    assert await s.history("tenant-a", "call-1") == []


async def test_redis_down_is_a_clear_unavailable() -> None:
    async with open_redis(dead_redis_settings()) as client:
        s = store(client, "dead")
        with pytest.raises(Unavailable, match=r"did not answer for history_append; it is down or overloaded"):
            await s.append("acme", f"call-{uuid.uuid4().hex}", HistoryEntry("user", "hi", 1))
        with pytest.raises(Unavailable, match="history_read"):
            await s.history("acme", "call-1")
