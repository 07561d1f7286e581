"""The tenant config cache against a real Redis: hits and misses, invalidation, the stale-writer
race (a writer that read before an update cannot put old config back), the L1's bounds, tenant
isolation, the TTL safety net, and reads that go on while Redis is down."""

from __future__ import annotations

import asyncio
import uuid

import pytest
import redis.asyncio as aioredis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common.config_cache import CachedConfig, ConfigCache, config_name
from common.errors import Unavailable
from common.gen.voiceai.gateway.v1 import gateway_pb2
from common.redis_conn import RedisSettings, open_redis
from tenant_svc.changes import ChangeListener
from tests.integration.test_redis_conn import dead_redis_settings


def cache(client: aioredis.Redis, prefix: str, **kw: float) -> ConfigCache:
    return ConfigCache(client, prefix=prefix, **kw)  # type: ignore[arg-type]


async def test_miss_set_hit_and_invalidate(
    redis_client: aioredis.Redis, redis_settings: RedisSettings
) -> None:
    c = cache(redis_client, redis_settings.key_prefix, l1_size=0)
    agent = gateway_pb2.AgentConfig(
        system_prompt="You help; ignore '; DROP TABLE agents;--", greeting="¡Hola! 👋"
    ).SerializeToString()
    assert await c.get("acme", "agent:support") == CachedConfig(None, 0)
    assert await c.set("acme", "agent:support", agent, version=0)
    assert await c.get("acme", "agent:support") == CachedConfig(agent, 0)
    assert await c.invalidate("acme", "agent:support") == 1
    assert await c.get("acme", "agent:support") == CachedConfig(None, 1)
    assert await c.set("acme", "agent:support", b"v2", version=1)
    assert (await c.get("acme", "agent:support")).value == b"v2"


async def test_a_stale_writer_cannot_put_old_config_back(
    redis_client: aioredis.Redis, redis_settings: RedisSettings
) -> None:
    """Reader A misses and loads v1 from the database; the config is updated to v2 and
    invalidated; A's write of v1 then arrives, and is refused. A fresh read gets v2."""
    database = {"agent": b"v1"}
    a, b = (cache(redis_client, redis_settings.key_prefix) for _ in range(2))  # two processes
    seen = await a.get("acme", "agent")
    loaded = database["agent"]
    database["agent"] = b"v2"
    await b.invalidate("acme", "agent")
    assert not await a.set("acme", "agent", loaded, version=seen.version)
    assert (await a.get("acme", "agent")).value is None
    assert await b.get_or_load("acme", "agent", _loader(database, "agent")) == b"v2"
    assert (await a.get("acme", "agent")).value == b"v2"


def _loader(database: dict[str, bytes], name: str):  # type: ignore[no-untyped-def]
    async def load() -> bytes:
        return database[name]

    return load


async def test_a_tenant_svc_change_notice_invalidates_the_resource(
    redis_client: aioredis.Redis, redis_settings: RedisSettings
) -> None:
    c = cache(redis_client, redis_settings.key_prefix)
    await c.set("acme", config_name("agent", "support"), b"old", version=0)
    listener: ChangeListener = c.on_change
    await listener("agent", "acme", "support")
    assert await c.get("acme", "agent:support") == CachedConfig(None, 1)


async def test_get_or_load_loads_once_then_serves_from_cache(
    redis_client: aioredis.Redis, redis_settings: RedisSettings
) -> None:
    loads = 0

    async def load() -> bytes:
        nonlocal loads
        loads += 1
        return b"cfg"

    c = cache(redis_client, redis_settings.key_prefix, l1_size=0)
    assert [await c.get_or_load("acme", "agent", load) for _ in range(3)] == [b"cfg"] * 3
    assert loads == 1


async def test_the_l1_answers_repeats_and_is_dropped_by_its_own_invalidate(
    redis_client: aioredis.Redis, redis_settings: RedisSettings
) -> None:
    here = cache(redis_client, redis_settings.key_prefix, l1_ttl_s=0.3)
    there = cache(redis_client, redis_settings.key_prefix, l1_size=0)
    await here.set("acme", "agent", b"v1", version=0)
    await redis_client.delete(here._keys("acme", "agent")[1])  # Redis lost it; the L1 still answers
    assert (await here.get("acme", "agent")).value == b"v1"
    await here.invalidate("acme", "agent")
    assert (await here.get("acme", "agent")).value is None
    # Another process's update reaches this L1 within l1_ttl_s.
    await here.set("acme", "agent", b"v2", version=1)
    await there.invalidate("acme", "agent")
    await there.set("acme", "agent", b"v3", version=2)
    assert (await here.get("acme", "agent")).value == b"v2"
    await asyncio.sleep(0.35)
    assert await here.get("acme", "agent") == CachedConfig(b"v3", 2)


async def test_the_l1_is_bounded(redis_client: aioredis.Redis, redis_settings: RedisSettings) -> None:
    c = cache(redis_client, redis_settings.key_prefix, l1_size=3)
    for i in range(10):
        await c.set("acme", f"agent-{i}", b"x", version=0)
    assert list(c._l1) == [("acme", "agent-7"), ("acme", "agent-8"), ("acme", "agent-9")]


async def test_entries_expire_but_versions_outlive_them(
    redis_client: aioredis.Redis, redis_settings: RedisSettings
) -> None:
    c = cache(redis_client, redis_settings.key_prefix, ttl_s=0.2, l1_size=0)
    await c.invalidate("acme", "agent")
    await c.set("acme", "agent", b"v", version=1)
    version_key, entry_key = c._keys("acme", "agent")
    assert 0 < await redis_client.pttl(entry_key) <= 200
    assert await redis_client.pttl(version_key) > 86_400_000
    await asyncio.sleep(0.3)
    assert await c.get("acme", "agent") == CachedConfig(None, 1)


async def test_tenants_and_names_are_isolated(
    redis_client: aioredis.Redis, redis_settings: RedisSettings
) -> None:
    c = cache(redis_client, redis_settings.key_prefix, l1_size=0)
    await c.set("tenant-a", "agent", b"a", version=0)
    await c.set("tenant-b", "agent", b"b", version=0)
    await c.set("tenant-a", "agent:ver", b"not a version", version=0)
    await c.invalidate("tenant-a", "agent")
    assert (await c.get("tenant-b", "agent")).value == b"b"
    assert (await c.get("tenant-a", "agent:ver")).value == b"not a version"
    p = redis_settings.key_prefix
    keys = sorted([k.decode() async for k in redis_client.scan_iter(match=f"{p}:*")])
    assert keys == [
        f"{p}:t:{{tenant-a}}:cfg:agent:ver",
        f"{p}:t:{{tenant-a}}:cfgv:agent",
        f"{p}:t:{{tenant-b}}:cfg:agent",
    ]


async def test_redis_down_reads_go_to_the_source_and_updates_say_so(caplog: pytest.LogCaptureFixture) -> None:
    async with open_redis(dead_redis_settings()) as client:
        c = cache(client, "dead")
        assert await c.get_or_load("acme", "agent", _loader({"agent": b"db"}, "agent")) == b"db"
        assert "config cache bypassed" in caplog.text
        with pytest.raises(Unavailable, match="config_invalidate"):
            await c.invalidate("acme", "agent")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(st.one_of(st.just(-1), st.integers(0, 2)), max_size=30))
def test_a_hit_is_never_older_than_the_database(redis_url: str, steps: list[int]) -> None:
    """Three readers (get -> load -> set, one step at a time) interleaved with updates (-1):
    whatever the order, a cache hit always equals the database's current value."""

    async def run() -> None:
        prefix = f"race-{uuid.uuid4().hex[:12]}"
        async with open_redis(RedisSettings(url=redis_url, key_prefix=prefix)) as client:
            c = cache(client, prefix, l1_size=0)
            database = 0
            readers: list[tuple[str, int, int]] = [("idle", 0, 0)] * 3  # (state, version, loaded)
            for step in steps:
                if step == -1:
                    database += 1
                    await c.invalidate("acme", "agent")
                else:
                    state, version, loaded = readers[step]
                    if state == "idle":
                        readers[step] = ("got", (await c.get("acme", "agent")).version, 0)
                    elif state == "got":
                        readers[step] = ("loaded", version, database)
                    else:
                        await c.set("acme", "agent", str(loaded).encode(), version=version)
                        readers[step] = ("idle", 0, 0)
                hit = (await c.get("acme", "agent")).value
                assert hit is None or int(hit) == database
            await client.delete(*c._keys("acme", "agent"))

    asyncio.run(run())
