"""Redis behind Sentinel, chosen by configuration: ``REDIS_URL=redis+sentinel://h1:26379,h2:26379/<master>[/<db>]``.

The client asks the sentinels for the current master before each new connection; when the
master fails, the sentinels promote a replica and the client's next connection goes there
(connections to the old master are dropped). Keys already use a tenant hash tag, so the same
layout works on Redis Cluster; a Cluster client is not wired yet.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import ExponentialBackoff

from common.errors import FailedPrecondition

if TYPE_CHECKING:
    from common.redis_conn import RedisSettings

SCHEME = "redis+sentinel"


@dataclass(frozen=True, slots=True)
class SentinelTarget:
    """Where the sentinels are and which master (and database) they watch."""

    sentinels: tuple[tuple[str, int], ...]
    master: str
    db: int = 0


def parse_sentinel_url(url: str) -> SentinelTarget:
    """``redis+sentinel://h1:26379,h2:26379/mymaster/0`` -> its parts (FAILED_PRECONDITION if bad)."""
    parts = urlsplit(url)
    path = [p for p in parts.path.split("/") if p]
    hosts = []
    for item in parts.netloc.rsplit("@", 1)[-1].split(","):
        host, _, port = item.strip().rpartition(":")
        if not host or not port.isdigit():
            raise FailedPrecondition(f"REDIS_URL: sentinel address {item!r} must be host:port")
        hosts.append((host.strip("[]"), int(port)))
    if (
        parts.scheme != SCHEME
        or not hosts
        or not path
        or len(path) > 2
        or (len(path) == 2 and not path[1].isdigit())
    ):
        raise FailedPrecondition(
            "REDIS_URL for Sentinel must look like redis+sentinel://host:26379[,host:26379...]/<master>[/<db>]"
        )
    return SentinelTarget(tuple(hosts), path[0], int(path[1]) if len(path) == 2 else 0)


def open_sentinel_redis(settings: RedisSettings) -> aioredis.Redis:
    """A client for the master the sentinels name (same timeouts and retries as ``open_redis``)."""
    target = parse_sentinel_url(settings.url)
    timeouts = {
        "socket_timeout": settings.socket_timeout_s,
        "socket_connect_timeout": settings.connect_timeout_s,
    }
    sentinel = Sentinel(
        list(target.sentinels),
        sentinel_kwargs=timeouts,
        socket_timeout=settings.socket_timeout_s,
        socket_connect_timeout=settings.connect_timeout_s,
    )
    return sentinel.master_for(
        target.master,
        db=target.db,
        max_connections=settings.max_connections,
        retry=Retry(ExponentialBackoff(cap=0.05, base=0.01), settings.retries),
        health_check_interval=settings.health_check_interval_s,
        client_name=settings.client_name,
    )


__all__ = ["SCHEME", "SentinelTarget", "open_sentinel_redis", "parse_sentinel_url"]
