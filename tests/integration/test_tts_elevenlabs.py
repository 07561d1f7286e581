"""tts_svc on ElevenLabs: the real elevenlabs SDK client against the streaming-endpoint double,
through the real gRPC servicer on loopback (helpers shared with the Deepgram tests)."""

from __future__ import annotations

import asyncio
import gc
import tracemalloc
from collections.abc import Mapping

import grpc
import pytest

from common.errors import Unavailable
from common.providers import EnvKeySource
from tests.doubles.deepgram_speak import DeepgramSpeakDouble
from tests.doubles.elevenlabs_api import ElevenLabsDouble, Fault
from tests.integration.test_tts_deepgram import (
    FAST,
    PIECES,
    RATE,
    TextCodedLocal,
    deepgram,
    fallbacks,
    piece_bytes,
    serving,
    speak,
)
from tts_svc.chain import ChainSynthesizer
from tts_svc.providers.base import SynthesisOptions
from tts_svc.providers.elevenlabs_tts import ElevenLabsTts

KEYS = {"ELEVENLABS_API_KEY": "el-shared", "ELEVENLABS_API_KEY__TENANT_TEST": "el-own"}
VOICE = "EXAVITQu4vr4xnSDxMaL"


def elevenlabs(double: ElevenLabsDouble, environ: Mapping[str, str] = KEYS, **kw: object) -> ElevenLabsTts:
    return ElevenLabsTts(base_url=double.url, deadlines=FAST, keys=EnvKeySource(environ), **kw)  # type: ignore[arg-type]


async def test_reply_streams_with_the_agents_voice_model_and_tenant_key() -> None:
    async with (
        ElevenLabsDouble() as el,
        serving({"local": TextCodedLocal(), "elevenlabs": elevenlabs(el)}) as addr,
    ):
        reply = await speak(
            addr, providers=["elevenlabs"], voice=VOICE, model="eleven_turbo_v2_5", speaking_rate=1.5
        )
    assert reply.code == grpc.StatusCode.OK
    assert reply.heard == "".join(PIECES) and reply.tags == PIECES
    assert el.texts == PIECES and all(r.completed for r in el.requests)  # one request per piece
    first = el.requests[0]
    assert first.voice_id == VOICE and first.model == "eleven_turbo_v2_5" and first.key == "el-own"
    assert first.query["output_format"] == f"pcm_{RATE}"
    assert first.body["voice_settings"]["speed"] == 1.2  # clamped to ElevenLabs' range


async def test_defaults_and_the_deployment_key_for_other_tenants() -> None:
    async with (
        ElevenLabsDouble() as el,
        serving({"local": TextCodedLocal(), "elevenlabs": elevenlabs(el)}) as addr,
    ):
        reply = await speak(addr, tenant="tenant-other", providers=["elevenlabs"])
    assert reply.heard == "".join(PIECES)
    first = el.requests[0]
    assert (first.key, first.voice_id, first.model) == (
        "el-shared",
        "JBFqnCBsd6RMkjVDRZzb",
        "eleven_flash_v2_5",
    )
    assert "voice_settings" not in first.body or first.body["voice_settings"] is None


@pytest.mark.parametrize(
    ("fault", "kind"),
    [
        (Fault(status=429, retry_after="3"), "rate_limited"),
        (Fault(status=500), "server_error"),
        (Fault(first_byte_delay_s=3.0), "timeout"),
    ],
    ids=["429", "500", "slow-first-byte"],
)
async def test_failure_before_first_audio_falls_back_with_every_word(fault: Fault, kind: str) -> None:
    local = TextCodedLocal()
    async with ElevenLabsDouble() as el, serving({"local": local, "elevenlabs": elevenlabs(el)}) as addr:
        el.faults.append(fault)
        before = fallbacks("elevenlabs", "local", kind)
        reply = await speak(addr, providers=["elevenlabs", "local"])
    assert reply.code == grpc.StatusCode.OK
    assert reply.heard == "".join(PIECES) and reply.tags == PIECES
    assert local.texts == PIECES and el.texts == PIECES[:1]
    assert fallbacks("elevenlabs", "local", kind) == before + 1


async def test_disconnect_mid_body_restarts_that_piece_on_the_next_provider() -> None:
    local = TextCodedLocal()
    async with ElevenLabsDouble() as el, serving({"local": local, "elevenlabs": elevenlabs(el)}) as addr:
        el.faults.extend([Fault(), Fault(drop_after_bytes=3201)])  # piece 2 cut mid-sample
        reply = await speak(addr, providers=["elevenlabs", "local"])
    assert reply.code == grpc.StatusCode.OK
    # The SDK reads the body in 1 KiB chunks: what was cut short ends on one of those.
    [first, cut, restarted, last] = reply.segments
    assert (
        first == (PIECES[0], PIECES[0])
        and restarted == (PIECES[1], PIECES[1])
        and last == (PIECES[2], PIECES[2])
    )
    assert cut[0] == PIECES[1] and cut[1] and PIECES[1].startswith(cut[1])
    assert local.texts == PIECES[1:] and piece_bytes(1) == el.requests[0].audio_bytes


async def test_fallback_to_another_cloud_provider_uses_its_default_voice() -> None:
    async with ElevenLabsDouble() as el, DeepgramSpeakDouble() as dg:
        providers = {"local": TextCodedLocal(), "elevenlabs": elevenlabs(el), "deepgram": deepgram(dg)}
        async with serving(providers) as addr:
            el.faults.append(Fault(status=503))
            reply = await speak(addr, providers=["elevenlabs", "deepgram"], voice=VOICE, model="eleven_v3")
    assert reply.heard == "".join(PIECES)
    assert dg.connections[0].model == "aura-2-thalia-en" and dg.texts == PIECES


async def test_a_refused_key_falls_back_without_showing_the_key() -> None:
    local = TextCodedLocal()
    async with (
        ElevenLabsDouble(keys={"el-valid"}) as el,
        serving({"local": local, "elevenlabs": elevenlabs(el)}) as addr,
    ):
        before = fallbacks("elevenlabs", "local", "auth")
        reply = await speak(addr, providers=["elevenlabs", "local"])
        refused = await speak(addr, providers=["elevenlabs"])
    assert reply.heard == "".join(PIECES) and fallbacks("elevenlabs", "local", "auth") == before + 1
    assert refused.code == grpc.StatusCode.UNAVAILABLE and "elevenlabs: auth" in refused.details
    assert "el-own" not in refused.details


async def test_over_cap_goes_to_the_next_provider_or_resource_exhausted() -> None:
    local = TextCodedLocal()
    hold = "Hold the line please while I look that up for you"  # a request of about 0.5 s
    async with ElevenLabsDouble(chunk_bytes=640, pace_s=0.02) as el:
        provider = elevenlabs(el, capacity=1)
        async with serving({"local": local, "elevenlabs": provider}) as addr:
            first = asyncio.create_task(speak(addr, hold, providers=["elevenlabs"]))
            while provider.limiter.in_use(await provider.key("tenant-test")) == 0:  # noqa: ASYNC110 - a counter
                await asyncio.sleep(0.005)
            spilled = await speak(addr, providers=["elevenlabs", "local"])
            refused = await speak(addr, providers=["elevenlabs"])
            held = await first
    assert held.heard == hold
    assert spilled.heard == "".join(PIECES) and local.texts == PIECES
    assert refused.code == grpc.StatusCode.RESOURCE_EXHAUSTED and "concurrency cap" in refused.details
    assert el.peak_active == 1


async def test_bad_voice_id_is_refused_naming_the_field() -> None:
    async with (
        ElevenLabsDouble() as el,
        serving({"local": TextCodedLocal(), "elevenlabs": elevenlabs(el)}) as addr,
    ):
        reply = await speak(addr, providers=["elevenlabs"], voice="not a voice!")
    assert reply.code == grpc.StatusCode.INVALID_ARGUMENT and "ElevenLabs voice id" in reply.details
    assert not el.requests


async def test_cancelled_stream_ends_the_request_and_frees_the_slot() -> None:
    async with ElevenLabsDouble(chunk_bytes=640, pace_s=0.02) as el:
        provider = elevenlabs(el)
        async with serving({"local": TextCodedLocal(), "elevenlabs": provider}) as addr:
            task = asyncio.create_task(speak(addr, PIECES[0], providers=["elevenlabs"]))
            while not el.requests or not el.requests[0].audio_bytes:  # noqa: ASYNC110 - a counter
                await asyncio.sleep(0.005)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            async with asyncio.timeout(5):
                while el.active or provider.limiter.in_use(await provider.key("tenant-test")):  # noqa: ASYNC110
                    await asyncio.sleep(0.005)
    assert [r.completed for r in el.requests] == [False]


async def test_memory_stays_bounded_in_a_storm_of_429s() -> None:
    not_the_double = [
        tracemalloc.Filter(False, "*/tests/doubles/*", all_frames=True),
        tracemalloc.Filter(False, "*/aiohttp/*", all_frames=True),  # the double's server
    ]
    async with ElevenLabsDouble() as el:
        provider = elevenlabs(el)
        chain = ChainSynthesizer({"elevenlabs": provider}, ["elevenlabs"])
        options = SynthesisOptions(tenant_id="tenant-test", sample_rate=RATE)

        async def attempts(n: int) -> None:
            for _ in range(n):
                el.faults.append(Fault(status=429, retry_after="1"))
                with pytest.raises(Unavailable, match="elevenlabs: rate_limited"):
                    await chain.synthesize("Refused.", options)

        await attempts(30)
        gc.collect()
        tracemalloc.start(12)
        try:
            before = tracemalloc.take_snapshot().filter_traces(not_the_double)
            await attempts(200)
            gc.collect()
            after = tracemalloc.take_snapshot().filter_traces(not_the_double)
        finally:
            tracemalloc.stop()
        grown = sum(s.size_diff for s in after.compare_to(before, "filename"))
        assert grown < 256 * 1024, f"{grown} bytes kept over 200 refused requests"
        assert provider.limiter.in_use(await provider.key("tenant-test")) == 0 and len(provider._clients) == 1
        await provider.aclose()
