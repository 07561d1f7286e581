"""Redis connection: settings, one bounded asyncio client per process, tenant key names, errors.

Every Redis key the mesh writes is built by ``tenant_key`` as ``<prefix>:t:{<tenant_id>}:...``:
the braces are a Redis Cluster hash tag, so all of one tenant's keys live in one slot and a Lua
script may touch several of them. Redis failures leave this layer as ``common.errors`` types
(``Unavailable`` when the server cannot be reached in time), counted in
``voiceai_redis_errors_total``; what a caller then does (fail open or closed) is its policy.
"""

from __future__ import annotations

import logging

import redis.asyncio as aioredis
from prometheus_client import Counter
from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from common import context
from common.errors import FailedPrecondition, InvalidArgument, Unavailable, VoiceAIError

log = logging.getLogger(__name__)

REDIS_ERRORS = Counter(
    "voiceai_redis_errors_total",
    "Redis operations that failed, by operation and error class",
    ["operation", "error"],
)


class RedisSettings(BaseSettings):
    """Where Redis is and how long to wait for it. ``REDIS_URL`` (no prefix) names the server,
    e.g. ``redis://127.0.0.1:6379/0`` or ``unix:///abs/path/redis.sock``; empty means "none
    configured" (the local mesh launcher then starts an embedded one and passes its URL on)."""

    model_config = SettingsConfigDict(env_prefix="VOICEAI_REDIS_", extra="ignore", populate_by_name=True)

    url: str = Field(default="", validation_alias=AliasChoices("REDIS_URL", "VOICEAI_REDIS_URL", "url"))
    # Namespace for every key, so several deployments (or test runs) can share one server.
    key_prefix: str = "voiceai"
    # A call admission waits on Redis at most about connect + socket timeout (x retries + 1):
    # a hung Redis must not stall a caller for the library default of 5 s per attempt.
    socket_timeout_s: float = 0.25
    connect_timeout_s: float = 0.25
    retries: int = 1
    # Bounded pool: at most this many sockets per process; a task waits up to pool_timeout_s
    # for a free one rather than opening more.
    max_connections: int = 32
    pool_timeout_s: float = 0.5
    health_check_interval_s: int = 30
    # Shown by CLIENT LIST: set it per service (e.g. "gateway") to see who holds connections.
    client_name: str = "voiceai"

    def with_prefix(self, prefix: str) -> RedisSettings:
        return self.model_copy(update={"key_prefix": prefix})


def open_redis(settings: RedisSettings) -> aioredis.Redis:
    """A client with its own bounded pool. Close it with ``await client.aclose()`` or use it as
    ``async with open_redis(s) as r:``; closing the client closes its pool."""
    if not settings.url:
        raise FailedPrecondition(
            "no Redis configured: set REDIS_URL (the local mesh launcher starts an embedded server"
            " and sets it for its children)"
        )
    if settings.url.startswith("redis+sentinel://"):  # issue 15: Sentinel by configuration
        from common.redis_sentinel import open_sentinel_redis

        return open_sentinel_redis(settings)
    pool = aioredis.BlockingConnectionPool.from_url(
        settings.url,
        max_connections=settings.max_connections,
        timeout=settings.pool_timeout_s,
        socket_timeout=settings.socket_timeout_s,
        socket_connect_timeout=settings.connect_timeout_s,
        retry=Retry(ExponentialBackoff(cap=0.05, base=0.01), settings.retries),
        health_check_interval=settings.health_check_interval_s,
        client_name=settings.client_name,
    )
    return aioredis.Redis.from_pool(pool)


def tenant_key(prefix: str, tenant_id: str, *parts: str) -> str:
    """``<prefix>:t:{<tenant_id>}:<parts...>``. Tenant ids are checked so none can escape its
    braces or namespace (e.g. ``a}:t:{b``)."""
    if not context.valid_id(tenant_id):
        raise InvalidArgument("tenant id must be 1-128 characters of letters, digits, '.', '_', ':' or '-'")
    return ":".join((prefix, "t", "{" + tenant_id + "}", *parts))


def translate(error: RedisError, operation: str) -> VoiceAIError:
    """Count a Redis failure and say what it means for the caller (no server address, no keys)."""
    REDIS_ERRORS.labels(operation, type(error).__name__).inc()
    if isinstance(error, RedisConnectionError | RedisTimeoutError):
        return Unavailable(
            f"the state store (Redis) did not answer for {operation}; it is down or overloaded, retry shortly"
        )
    log.error("redis %s failed: %s", operation, error)
    return VoiceAIError(f"the state store (Redis) refused {operation}; it was logged")
