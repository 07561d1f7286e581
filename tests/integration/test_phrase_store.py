"""Phrase audio shared by gateway pods in Redis: synthesized once per tenant/voice/provider/
text, whatever the number of pods, restarts or pods asking at the same moment."""

from __future__ import annotations

import asyncio

from common.audio import LINEAR16, Format
from common.redis_conn import RedisSettings, open_redis
from gateway.agents import Agent
from gateway.phrase_store import RedisPhraseStore, decode, encode, phrase_key

FMT = Format(LINEAR16, 16000)
AURA = Agent(agent_id="a", voice="aura-2-thalia-en", tts_providers=("deepgram", "local"), tts_model="aura-2")


class Synth:
    """Counts syntheses; slow enough that pods asking together overlap."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, text: str) -> list[tuple[str, bytes]]:
        self.calls += 1
        await asyncio.sleep(0.1)
        return [(text, bytes([self.calls]) * 640)]


def test_keys_separate_tenant_voice_provider_model_format_and_text() -> None:
    base = phrase_key("t1", AURA, FMT, "Hello.")
    assert base.startswith("t1:") and "Hello" not in base
    others = {
        phrase_key("t2", AURA, FMT, "Hello."),
        phrase_key(
            "t1", Agent(agent_id="a", voice="aura-2-orion-en", tts_providers=("deepgram",)), FMT, "Hello."
        ),
        phrase_key(
            "t1", Agent(agent_id="a", voice="aura-2-thalia-en", tts_providers=("elevenlabs",)), FMT, "Hello."
        ),
        phrase_key("t1", AURA, Format(LINEAR16, 8000), "Hello."),
        phrase_key("t1", AURA, FMT, "Hello!"),
    }
    assert base not in others and len(others) == 5
    pieces = [("Hello.", b"\x01\x02" * 10), ("", b""), ("Bye é.", b"\x00")]
    assert decode(encode(pieces)) == pieces


async def test_synthesized_once_across_pods_restarts_and_concurrent_misses(redis_url: str) -> None:
    redis = open_redis(RedisSettings(url=redis_url))
    try:
        synth = Synth()
        key = phrase_key("tenant-phrases", AURA, FMT, "Please hold on.")
        pods = [RedisPhraseStore(redis, "test17:") for _ in range(3)]
        # Three pods miss at the same moment: one synthesizes, the others wait for its audio.
        got = await asyncio.gather(*(p.fetch_or_make(key, lambda: synth("Please hold on.")) for p in pods))
        assert synth.calls == 1 and got[0] == got[1] == got[2]
        # A restarted pod (a new store, nothing in memory) reads it back.
        again = await RedisPhraseStore(redis, "test17:").fetch_or_make(key, lambda: synth("Please hold on."))
        assert again == got[0] and synth.calls == 1
        # Another tenant's identical phrase is its own entry.
        other = phrase_key("tenant-other", AURA, FMT, "Please hold on.")
        await pods[0].fetch_or_make(other, lambda: synth("Please hold on."))
        assert synth.calls == 2
        # A corrupt entry is dropped and made again, not played.
        await redis.set("test17:phrase:" + key, b"\xff\xff")
        fresh = await pods[1].fetch_or_make(key, lambda: synth("Please hold on."))
        assert synth.calls == 3 and fresh[0][0] == "Please hold on."
    finally:
        await redis.aclose()
