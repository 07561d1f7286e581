"""ElevenLabs SDK clients per key: evicting one (more keys in use than the cache holds) must not
break another tenant's piece in flight on it."""

from __future__ import annotations

import contextlib

from common.providers import EnvKeySource
from tests.doubles.deepgram_speak import heard_text
from tests.doubles.elevenlabs_api import ElevenLabsDouble
from tests.integration.test_tts_deepgram import FAST, RATE
from tts_svc.providers.base import SynthesisOptions
from tts_svc.providers.elevenlabs_tts import ElevenLabsTts

ENV = {"ELEVENLABS_API_KEY__TENANT_A": "el-a", "ELEVENLABS_API_KEY__TENANT_B": "el-b"}
LONG = "A piece long enough to arrive in many chunks while another tenant speaks."


async def test_a_client_evicted_for_another_key_finishes_the_piece_in_flight() -> None:
    async with ElevenLabsDouble(chunk_bytes=640, pace_s=0.002) as el:
        provider = ElevenLabsTts(base_url=el.url, deadlines=FAST, keys=EnvKeySource(ENV), max_clients=1)
        a = provider.open_session(SynthesisOptions(tenant_id="tenant-a", sample_rate=RATE))
        b = provider.open_session(SynthesisOptions(tenant_id="tenant-b", sample_rate=RATE))
        heard_a, heard_b = bytearray(), bytearray()
        try:
            async with contextlib.aclosing(a.synthesize_stream(LONG)) as chunks:
                async for pcm in chunks:
                    if not heard_a:  # A's request is in flight: B's key takes the only client place
                        async for other in b.synthesize_stream("Meanwhile."):
                            heard_b += other
                    heard_a += pcm
        finally:
            await provider.aclose()
    assert heard_b and heard_text(bytes(heard_b), RATE) == "Meanwhile."
    assert heard_text(bytes(heard_a), RATE) == LONG
    assert [r.key for r in el.requests] == ["el-a", "el-b"]
