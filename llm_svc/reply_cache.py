"""An optional per-tenant cache of exact repeats (greetings, fixed prompts) in Redis.

The key is the tenant plus a SHA-256 of the whole request as the provider would see it: the
conversation (roles, text, interruptions, tool calls), model, limits, temperature, tools, the
responder rules and the provider chain, plus a tag of the service's own defaults (default model
and chain), so a changed default never serves an old answer. Only complete replies are stored:
finish "stop", no tool calls, not served by a fallback provider (an outage must not pin the
fallback's answer for the TTL), at most ``max_chars``. A hit replays the stored pieces as deltas
and ends with ``cached=True`` and zero usage (no provider tokens were spent).

Redis trouble never fails a reply: a failed read is a miss, a failed write is skipped (both
counted by common.redis_conn and logged without keys or text).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import redis.asyncio as aioredis
from prometheus_client import Counter
from redis.exceptions import RedisError

from common import context
from common.errors import VoiceAIError
from common.redis_conn import tenant_key, translate
from llm_svc.chain import close_stream
from llm_svc.providers.base import ChatEvent, ChatModel, ChatRequest, Completion, TokenDelta, ToolCallDelta

log = logging.getLogger(__name__)

LOOKUPS = Counter("voiceai_llm_reply_cache_total", "Reply cache lookups by result", ["result"])


def request_digest(request: ChatRequest, config_tag: str) -> str:
    """SHA-256 over a canonical JSON of everything that shapes the reply."""
    doc: dict[str, Any] = {
        "tag": config_tag,
        "model": request.model,
        "max_tokens": request.max_tokens,
        "temperature": request.temperature,
        "providers": list(request.providers),
        "messages": [dataclasses.asdict(m) for m in request.messages],
        "tools": [dataclasses.asdict(t) for t in request.tools],
        "rules": dataclasses.asdict(request.rules),
    }
    raw = json.dumps(doc, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(raw.encode()).hexdigest()


class ReplyCache:
    """Stored replies per tenant: ``get``/``put`` by request, each entry expiring after ``ttl_s``."""

    def __init__(
        self,
        redis: aioredis.Redis,
        key_prefix: str,
        ttl_s: int = 3600,
        max_chars: int = 2000,
        config_tag: str = "",
    ) -> None:
        self._redis = redis
        self._prefix = key_prefix
        self.ttl_s = ttl_s
        self.max_chars = max_chars
        self._tag = config_tag

    def key(self, tenant_id: str, request: ChatRequest) -> str:
        return tenant_key(self._prefix, tenant_id, "llm", "reply", request_digest(request, self._tag))

    async def get(self, key: str) -> tuple[list[str], str] | None:
        try:
            raw = await self._redis.get(key)
        except RedisError as e:
            log.warning("reply cache read skipped: %s", translate(e, "reply cache read").message)
            return None
        if raw is None:
            return None
        try:
            doc = json.loads(raw)
            return [str(p) for p in doc["pieces"]], str(doc["engine"])
        except (ValueError, KeyError, TypeError):
            return None  # written by another version: a miss, overwritten on the next put

    async def put(self, key: str, pieces: list[str], engine: str) -> None:
        try:
            await self._redis.set(key, json.dumps({"pieces": pieces, "engine": engine}), ex=self.ttl_s)
        except RedisError as e:
            log.warning("reply cache write skipped: %s", translate(e, "reply cache write").message)

    async def aclose(self) -> None:
        await self._redis.aclose()


class CachingChatModel:
    """A ChatModel that answers exact repeats from a ReplyCache and stores complete replies."""

    def __init__(self, inner: ChatModel, cache: ReplyCache) -> None:
        self.inner = inner
        self.cache = cache
        self.name = inner.name

    async def stream(self, request: ChatRequest) -> AsyncIterator[ChatEvent]:
        tenant = context.tenant_id()
        try:
            key = self.cache.key(tenant, request) if tenant else None
        except VoiceAIError:
            key = None  # a tenant id Redis keys cannot carry: no caching for it
        if key is None:
            async for event in self.inner.stream(request):
                yield event
            return
        hit = await self.cache.get(key)
        if hit is not None:
            LOOKUPS.labels("hit").inc()
            pieces, engine = hit
            for piece in pieces:
                yield TokenDelta(piece)
            yield Completion("stop", 0, 0, engine, cached=True)
            return
        LOOKUPS.labels("miss").inc()
        pieces = []
        size, storable = 0, True
        events = self.inner.stream(request)
        try:
            async for event in events:
                if isinstance(event, TokenDelta):
                    size += len(event.text)
                    if storable and size <= self.cache.max_chars:
                        pieces.append(event.text)
                    else:
                        storable, pieces = False, []
                elif isinstance(event, ToolCallDelta):
                    storable, pieces = False, []
                elif (
                    storable
                    and pieces
                    and event.finish_reason == "stop"
                    and not event.fell_back
                    and not event.cached
                ):
                    # Before yielding done: the servicer closes this generator right after it.
                    await self.cache.put(key, pieces, event.engine)
                yield event
        finally:
            await close_stream(events)
