"""Phrase audio (greetings, fillers, apologies, transfer phrases) shared by every gateway pod in
Redis, so a phrase is synthesized once per key, not once per pod or per restart.

Keyed by tenant, voice, TTS provider and model, audio format and text (hashed: the text is
tenant content and stays out of key names). The first pod to miss takes a short lock and
synthesizes; the others wait a moment for its result, then synthesize for themselves without
storing if it has not come (a failed pod never blocks a phrase). Entries expire after a week.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import struct
from collections.abc import Awaitable, Callable

from prometheus_client import Counter
from redis.asyncio import Redis
from redis.exceptions import RedisError

from common.audio import Format
from gateway.agents import Agent

log = logging.getLogger(__name__)

Pieces = list[tuple[str, bytes]]
PHRASE_LOOKUPS = Counter(
    "voiceai_phrase_cache_lookups_total",
    "Shared phrase audio lookups by outcome (hit, synthesized, waited, unavailable).",
    ["outcome"],
)
_LEN = struct.Struct(">I")


def phrase_key(tenant_id: str, agent: Agent, fmt: Format, text: str) -> str:
    """The shared key of one phrase's audio (tenant in clear for per-tenant deletion, rest hashed)."""
    provider = agent.tts_providers[0] if agent.tts_providers else "default"
    digest = hashlib.sha256(
        "\x1f".join((agent.voice, provider, agent.tts_model, fmt.describe(), text)).encode()
    ).hexdigest()[:40]
    return f"{tenant_id}:{digest}"


def encode(pieces: Pieces) -> bytes:
    """``(text, audio)`` pieces as length-prefixed bytes."""
    out = bytearray()
    for text, audio in pieces:
        raw = text.encode()
        out += _LEN.pack(len(raw)) + raw + _LEN.pack(len(audio)) + audio
    return bytes(out)


def decode(data: bytes) -> Pieces:
    """The pieces ``encode`` made (ValueError when the bytes are not such a record)."""
    pieces: Pieces = []
    i = 0
    try:
        while i < len(data):
            (n,) = _LEN.unpack_from(data, i)
            text = data[i + 4 : i + 4 + n].decode()
            i += 4 + n
            (m,) = _LEN.unpack_from(data, i)
            audio = data[i + 4 : i + 4 + m]
            if len(audio) != m:
                raise ValueError("truncated phrase audio")
            i += 4 + m
            pieces.append((text, audio))
    except (struct.error, UnicodeDecodeError) as e:
        raise ValueError("not a phrase audio record") from e
    return pieces


class RedisPhraseStore:
    """The phrase audio every pod shares (see module docstring)."""

    def __init__(
        self,
        redis: Redis,
        prefix: str = "",
        *,
        ttl_s: int = 7 * 24 * 3600,
        lock_s: float = 10.0,
        wait_s: float = 3.0,
    ) -> None:
        self._redis = redis
        self._prefix = f"{prefix}phrase:"
        self._ttl_s = ttl_s
        self._lock_ms = int(lock_s * 1000)
        self._wait_s = wait_s

    async def _get(self, key: str) -> Pieces | None:
        raw = await self._redis.get(self._prefix + key)
        if raw is None:
            return None
        try:
            return decode(raw if isinstance(raw, bytes) else raw.encode("latin-1"))
        except ValueError:
            log.warning("dropping an unreadable shared phrase entry")
            await self._redis.delete(self._prefix + key)
            return None

    async def fetch_or_make(self, key: str, make: Callable[[], Awaitable[Pieces]]) -> Pieces:
        """The shared audio for ``key``; synthesized (by ``make``) and stored once when missing."""
        try:
            found = await self._get(key)
            if found is not None:
                PHRASE_LOOKUPS.labels("hit").inc()
                return found
            locked = await self._redis.set(self._prefix + key + ":lock", b"1", nx=True, px=self._lock_ms)
        except RedisError as e:
            PHRASE_LOOKUPS.labels("unavailable").inc()
            log.warning("shared phrase cache unavailable (%s); synthesizing here", type(e).__name__)
            return await make()
        if not locked:
            waited = await self._wait_for(key)
            if waited is not None:
                PHRASE_LOOKUPS.labels("waited").inc()
                return waited
            return await make()  # the pod that holds the lock is slow or gone: do not wait more
        try:
            pieces = await make()
            try:
                await self._redis.set(self._prefix + key, encode(pieces), ex=self._ttl_s)
            except RedisError as e:
                log.warning("shared phrase not stored (%s)", type(e).__name__)
            PHRASE_LOOKUPS.labels("synthesized").inc()
            return pieces
        finally:
            try:
                await self._redis.delete(self._prefix + key + ":lock")
            except RedisError:
                pass  # it expires

    async def _wait_for(self, key: str) -> Pieces | None:
        deadline = asyncio.get_running_loop().time() + self._wait_s
        while asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
            try:
                found = await self._get(key)
            except RedisError:
                return None
            if found is not None:
                return found
        return None


__all__ = ["PHRASE_LOOKUPS", "RedisPhraseStore", "decode", "encode", "phrase_key"]
