"""Tenant config cache: serialized config (e.g. a protobuf Agent) in Redis, versioned.

Each entry has a version counter beside it. ``invalidate`` bumps the counter and deletes the
entry in one script; ``set`` writes only if the counter still holds the version the writer saw
before it loaded. So a writer that read the database before an update and writes after it (the
stale-writer race) is refused, and the old config cannot come back. The TTL is a safety net.

Protocol for a reader: ``got = await cache.get(t, name)``; on a miss load from the source of
truth and ``await cache.set(t, name, data, version=got.version)`` (``get_or_load`` does this).
An updater writes the source of truth first, then ``await cache.invalidate(t, name)``.

An in-process L1 (small, LRU-bounded, short TTL) answers repeated lookups without a round trip.
It is dropped at once by this process's own ``invalidate``/``set`` and replaced whenever Redis
shows a newer version; another process's update reaches it within ``l1_ttl_s`` at most (a call
keeps the config it started with anyway). ``l1_size=0`` turns it off.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import redis.asyncio as aioredis
from prometheus_client import Counter
from redis.exceptions import RedisError

from common.errors import Unavailable
from common.redis_conn import tenant_key, translate

log = logging.getLogger(__name__)

LOOKUPS = Counter(
    "voiceai_config_cache_lookups_total", "Config cache lookups by where they were answered", ["result"]
)
_L1_HIT, _HIT, _MISS = (LOOKUPS.labels(r) for r in ("l1_hit", "hit", "miss"))

# KEYS version, entry. Returns {version} on a miss, {version, data} on a hit.
_GET = """
local v = redis.call('GET', KEYS[1]) or '0'
local e = redis.call('HMGET', KEYS[2], 'v', 'd')
if e[1] == v and e[2] then return {v, e[2]} end
return {v}
"""

# KEYS version, entry; ARGV expected version, data, entry ttl ms. Returns 1 if written.
_SET = """
local v = redis.call('GET', KEYS[1]) or '0'
if v ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[2], 'v', v, 'd', ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return 1
"""

# KEYS version, entry; ARGV version ttl ms. Returns the new version.
_INVALIDATE = """
local v = redis.call('INCR', KEYS[1])
redis.call('PEXPIRE', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[2])
return v
"""


def config_name(kind: str, resource_id: str) -> str:
    """The cache name of one resource, e.g. ``agent:support``: what readers and invalidations
    must agree on."""
    return f"{kind}:{resource_id}"


@dataclass(frozen=True, slots=True)
class CachedConfig:
    """A lookup's answer: the bytes (None on a miss) and the version to pass to ``set``."""

    value: bytes | None
    version: int


class ConfigCache:
    """Versioned per-tenant config bytes in Redis, with an optional in-process L1."""

    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        prefix: str,
        ttl_s: float = 600.0,
        # Must outlast any load (read source, write cache); a counter that expires restarts at 0.
        version_ttl_s: float = 30 * 86400.0,
        l1_size: int = 1024,
        l1_ttl_s: float = 1.0,
    ) -> None:
        self._prefix = prefix
        self._ttl_ms = int(ttl_s * 1000)
        self._version_ttl_ms = int(version_ttl_s * 1000)
        self._get = redis.register_script(_GET)
        self._set = redis.register_script(_SET)
        self._invalidate = redis.register_script(_INVALIDATE)
        self._l1: OrderedDict[tuple[str, str], tuple[float, int, bytes]] = OrderedDict()
        self._l1_size = l1_size
        self._l1_ttl = l1_ttl_s

    def _keys(self, tenant_id: str, name: str) -> list[str]:
        # Separate namespaces: no config name can collide with another's version key.
        return [
            tenant_key(self._prefix, tenant_id, "cfgv", name),
            tenant_key(self._prefix, tenant_id, "cfg", name),
        ]

    def _remember(self, key: tuple[str, str], version: int, value: bytes) -> None:
        if self._l1_size <= 0:
            return
        self._l1[key] = (time.monotonic() + self._l1_ttl, version, value)
        self._l1.move_to_end(key)
        if len(self._l1) > self._l1_size:
            self._l1.popitem(last=False)

    async def get(self, tenant_id: str, name: str) -> CachedConfig:
        """The cached bytes, or a miss carrying the current version. Raises ``Unavailable``."""
        key = (tenant_id, name)
        hit = self._l1.get(key)
        if hit is not None:
            if hit[0] > time.monotonic():
                _L1_HIT.inc()
                return CachedConfig(hit[2], hit[1])
            del self._l1[key]
        try:
            reply = await self._get(keys=self._keys(tenant_id, name))
        except RedisError as error:
            raise translate(error, "config_get") from error
        version = int(reply[0])
        if len(reply) < 2:
            _MISS.inc()
            return CachedConfig(None, version)
        _HIT.inc()
        self._remember(key, version, reply[1])
        return CachedConfig(reply[1], version)

    async def set(self, tenant_id: str, name: str, value: bytes, *, version: int) -> bool:
        """Store ``value`` if the version is still the one ``get`` returned; False if an
        invalidation came in between (the caller's data may be stale: do not retry with it)."""
        try:
            written = await self._set(
                keys=self._keys(tenant_id, name), args=[str(version), value, self._ttl_ms]
            )
        except RedisError as error:
            raise translate(error, "config_set") from error
        if written:
            self._remember((tenant_id, name), version, value)
        else:
            self._l1.pop((tenant_id, name), None)
        return bool(written)

    async def invalidate(self, tenant_id: str, name: str) -> int:
        """Drop the entry everywhere and refuse writes based on older reads; returns the new
        version. Raises ``Unavailable``: an updater must retry, or the old entry lives until
        its TTL."""
        self._l1.pop((tenant_id, name), None)
        try:
            version = await self._invalidate(keys=self._keys(tenant_id, name), args=[self._version_ttl_ms])
        except RedisError as error:
            raise translate(error, "config_invalidate") from error
        return int(version)

    async def on_change(self, kind: str, tenant_id: str, resource_id: str) -> None:
        """A ``tenant_svc.changes.ChangeListener``: invalidates ``config_name(kind, resource_id)``."""
        await self.invalidate(tenant_id, config_name(kind, resource_id))

    async def get_or_load(self, tenant_id: str, name: str, load: Callable[[], Awaitable[bytes]]) -> bytes:
        """The cached bytes, else ``load()``'s, cached unless an update raced the load. With
        Redis down the source is read directly (logged): a cache outage must not stop calls."""
        try:
            got = await self.get(tenant_id, name)
        except Unavailable as error:
            log.warning("config cache bypassed: %s", error.message)
            return await load()
        if got.value is not None:
            return got.value
        value = await load()
        try:
            await self.set(tenant_id, name, value, version=got.version)
        except Unavailable as error:
            log.warning("config not cached: %s", error.message)
        return value
