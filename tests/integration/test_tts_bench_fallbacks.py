"""The TTS bench's fallback series must time real fallbacks: with a Deepgram socket left idle
by the overhead series, a stream reused it, never met the injected fault and the "switch time"
was measured from 0 (hours)."""

from __future__ import annotations

from common.providers import EnvKeySource
from tests.bench.providers_tts import DEADLINE_S, ENV, OPTIONS, fallbacks
from tests.doubles import deepgram_speak
from tests.doubles.deepgram_speak import DeepgramSpeakDouble
from tts_svc.providers.cloud import Deadlines
from tts_svc.providers.deepgram_aura import DeepgramAura


async def test_every_fallback_run_meets_its_fault_though_an_idle_socket_is_pooled() -> None:
    deadlines = Deadlines(connect_s=1.0, first_audio_s=DEADLINE_S, idle_s=1.0, close_s=0.5)
    async with DeepgramSpeakDouble() as dg:
        provider = DeepgramAura(base_url=dg.url, deadlines=deadlines, keys=EnvKeySource(ENV))
        try:
            session = provider.open_session(OPTIONS)
            async for _ in session.synthesize_stream("Warm up."):
                pass
            await session.aclose()
            assert len(provider.idle) == 1  # as the overhead series leaves it
            lines = await fallbacks("deepgram", provider, dg, deepgram_speak, 3)
        finally:
            await provider.aclose()
    assert not dg.faults  # each injected fault met a new connection
    assert len(lines) == 3
