"""The Redis connection layer against real servers: the embedded redis-server's lifecycle (start,
reuse, refuse, stop, a stale pid file), settings from the environment, the bounded client, key
names, and what callers get when Redis is not there."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from common.errors import FailedPrecondition, InvalidArgument, Unavailable
from common.redis_conn import REDIS_ERRORS, RedisSettings, open_redis, tenant_key, translate
from common.redis_embedded import EmbeddedRedis, _ping
from common.tasks import cancel_and_wait


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def dead_redis_settings() -> RedisSettings:
    """A URL where nothing listens: connections are refused at once."""
    return RedisSettings(url=f"redis://127.0.0.1:{free_port()}/0", key_prefix="dead")


async def test_embedded_server_serves_then_stops_cleanly(tmp_path: Path) -> None:
    server = EmbeddedRedis(tmp_path / "r")
    url = server.start()
    assert url == f"unix://{tmp_path / 'r' / 'redis.sock'}" and server.owned
    async with open_redis(RedisSettings(url=url)) as client:
        await client.set("k", b"v")
        assert await client.get("k") == b"v"
    server.stop()
    assert not _ping(url)
    assert not (tmp_path / "r" / "redis.pid").exists() and not (tmp_path / "r" / "redis.sock").exists()
    server.stop()  # idempotent


def test_a_second_start_reuses_the_running_server_or_fails_clearly(tmp_path: Path) -> None:
    first = EmbeddedRedis(tmp_path)
    url = first.start()
    try:
        second = EmbeddedRedis(tmp_path)
        assert second.start() == url and not second.owned
        second.stop()  # lets go without stopping the server it does not own
        assert _ping(url)
        with pytest.raises(FailedPrecondition, match=r"already serves .* stop it, use it via REDIS_URL"):
            EmbeddedRedis(tmp_path).start(reuse=False)
    finally:
        first.stop()
    assert not _ping(url)


def test_a_server_orphaned_by_a_dead_launcher_is_reused_and_stale_files_are_cleared(tmp_path: Path) -> None:
    orphan = EmbeddedRedis(tmp_path)
    url = orphan.start()
    pid = int((tmp_path / "redis.pid").read_text())
    orphan._proc = None  # the launcher "died": nobody owns the server any more
    try:
        again = EmbeddedRedis(tmp_path)
        assert again.start() == url and not again.owned
    finally:
        os.kill(pid, 15)
        for _ in range(200):
            if not _ping(url):
                break
            time.sleep(0.02)
    # A pid file naming a process that is not redis-server (e.g. a recycled pid) is stale.
    (tmp_path / "redis.pid").write_text(f"{os.getpid()}\n")
    (tmp_path / "url").write_text(url + "\n")
    fresh = EmbeddedRedis(tmp_path)
    try:
        assert fresh.start() == url and fresh.owned
    finally:
        fresh.stop()


def test_embedded_server_on_a_loopback_port(tmp_path: Path) -> None:
    port = free_port()
    with EmbeddedRedis(tmp_path, port=port) as server:
        assert server.url == f"redis://127.0.0.1:{port}/0" and _ping(server.url)
    assert not _ping(f"redis://127.0.0.1:{port}/0")


def test_a_server_that_cannot_start_says_where_to_look(tmp_path: Path) -> None:
    with pytest.raises(FailedPrecondition, match=r"did not start .* see .*redis\.log"):
        EmbeddedRedis(tmp_path, executable="/bin/false", start_timeout_s=2).start()


def test_settings_read_redis_url_without_prefix_and_knobs_with_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://10.1.2.3:6380/2")
    monkeypatch.setenv("VOICEAI_REDIS_KEY_PREFIX", "staging")
    monkeypatch.setenv("VOICEAI_REDIS_SOCKET_TIMEOUT_S", "0.1")
    s = RedisSettings()
    assert (s.url, s.key_prefix, s.socket_timeout_s) == ("redis://10.1.2.3:6380/2", "staging", 0.1)
    assert RedisSettings(url="unix:///x.sock").url == "unix:///x.sock"
    monkeypatch.delenv("REDIS_URL")
    with pytest.raises(FailedPrecondition, match="set REDIS_URL"):
        open_redis(RedisSettings())


async def test_the_pool_is_bounded(redis_settings: RedisSettings, redis_client: aioredis.Redis) -> None:
    name = redis_settings.key_prefix
    client = open_redis(redis_settings.model_copy(update={"max_connections": 2, "client_name": name}))
    seen: list[int] = []
    stop = asyncio.Event()

    async def watch() -> None:
        # Ends on its own: redis-py may swallow a cancellation that lands inside a command, and a
        # watcher that outlived the test would poll Redis for the rest of the session.
        while not stop.is_set():
            clients = await redis_client.client_list()
            seen.append(sum(1 for c in clients if c.get("name") == name))
            await asyncio.sleep(0.005)

    watcher = asyncio.get_running_loop().create_task(watch())
    try:
        # Twelve concurrent blocking commands queue for two sockets: all finish, none fails.
        results = await asyncio.gather(*(client.blpop([f"{name}:q{i}"], 0.05) for i in range(12)))
        assert results == [None] * 12
        assert max(seen) == 2
    finally:
        stop.set()
        await cancel_and_wait(watcher)
        await client.aclose()


def test_tenant_keys_carry_a_hash_tag_and_refuse_ids_that_could_escape_it() -> None:
    assert tenant_key("vx", "acme", "calls") == "vx:t:{acme}:calls"
    assert tenant_key("vx", "a.b:c-d_e", "rate", "requests") == "vx:t:{a.b:c-d_e}:rate:requests"
    for bad in ["", "a}:t:{b", "a b", "{x}", "-x", "x" * 129]:
        with pytest.raises(InvalidArgument):
            tenant_key("vx", bad, "calls")


async def test_redis_down_is_unavailable_with_a_clear_message_and_counted() -> None:
    before = REDIS_ERRORS.labels("probe", "ConnectionError")._value.get()
    async with open_redis(dead_redis_settings()) as client:
        with pytest.raises(RedisError) as info:
            await client.get("x")
    error = translate(info.value, "probe")
    assert isinstance(error, Unavailable) and error.retryable
    assert error.message == (
        "the state store (Redis) did not answer for probe; it is down or overloaded, retry shortly"
    )
    assert REDIS_ERRORS.labels("probe", "ConnectionError")._value.get() == before + 1


async def test_a_hung_redis_times_out_instead_of_stalling_the_caller() -> None:
    """A listener that accepts and never answers: the socket timeout bounds the wait."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    port = listener.getsockname()[1]
    try:
        settings = RedisSettings(url=f"redis://127.0.0.1:{port}/0", socket_timeout_s=0.1, retries=0)
        client: aioredis.Redis = open_redis(settings)
        with pytest.raises(RedisError) as info:
            await client.get("x")
        assert isinstance(translate(info.value, "probe"), Unavailable)
        await client.aclose()
    finally:
        listener.close()
