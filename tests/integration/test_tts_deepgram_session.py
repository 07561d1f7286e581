"""Deepgram Aura sessions against the speak double: barge-in (Clear), reuse only after Cleared,
resources after a stream ends, and memory in a 429 storm."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import tracemalloc
from collections.abc import Callable

import grpc
import grpc.aio
import pytest

from common.errors import Unavailable
from common.gen.voiceai.common.v1 import audio_pb2
from common.gen.voiceai.tts.v1 import tts_pb2, tts_pb2_grpc
from common.providers import EnvKeySource
from tests.conftest import tts_md as md
from tests.doubles.deepgram_speak import DeepgramSpeakDouble, Fault, heard_text
from tests.integration.test_tts_deepgram import FAST, KEYS, RATE, TextCodedLocal, deepgram, serving, speak
from tts_svc.chain import ChainSynthesizer
from tts_svc.providers.base import SynthesisOptions
from tts_svc.providers.deepgram_aura import DeepgramAura

R = tts_pb2.StreamingSynthesizeRequest
LONG = "This sentence is long enough to take several chunks of audio to speak in full as replies do."
# The double's own records and its server's connection objects are not the service's memory.
NOT_THE_DOUBLE = [
    tracemalloc.Filter(False, "*/tests/doubles/*", all_frames=True),
    tracemalloc.Filter(False, "*/websockets/asyncio/server.py", all_frames=True),
    tracemalloc.Filter(False, "*/websockets/server.py", all_frames=True),
]


async def until(predicate: Callable[[], object], timeout_s: float = 5.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not predicate():  # noqa: ASYNC110 - counters in the double and the limiter
            await asyncio.sleep(0.005)


async def test_barge_in_clears_the_websocket_before_the_next_stream_uses_it() -> None:
    async with DeepgramSpeakDouble(chunk_ms=20) as dg:
        provider = deepgram(dg)
        async with serving({"local": TextCodedLocal(), "deepgram": provider}) as addr:
            async with grpc.aio.insecure_channel(addr) as ch:
                call = tts_pb2_grpc.TextToSpeechServiceStub(ch).StreamingSynthesize(metadata=md())
                fmt = audio_pb2.AudioFormat(
                    encoding=audio_pb2.AUDIO_ENCODING_LINEAR16, sample_rate_hertz=RATE
                )
                await call.write(R(config=tts_pb2.SynthesisConfig(audio_format=fmt, providers=["deepgram"])))
                await call.write(R(text=LONG))
                await call.write(R(flush=tts_pb2.Flush()))
                first = await call.read()
                assert first.audio.text == LONG
                call.cancel()  # the caller spoke over the agent
            await until(lambda: len(provider.idle) == 1)  # Cleared: clean, kept for the next turn
            reply = await speak(addr, "After the interruption.", providers=["deepgram"])
        await provider.aclose()
        await until(lambda: dg.open == 0)
        assert provider.limiter.in_use(await provider.key("tenant-test")) == 0
    assert reply.heard == "After the interruption."  # nothing of the interrupted piece
    [conn] = dg.connections
    assert conn.messages == ["Speak", "Flush", "Clear", "Speak", "Flush", "Close"]


async def test_a_socket_that_does_not_confirm_cleared_is_closed() -> None:
    async with DeepgramSpeakDouble(chunk_ms=20) as dg:
        provider = deepgram(dg)
        dg.faults.append(Fault(ignore_clear=True))
        session = provider.open_session(SynthesisOptions(sample_rate=RATE))
        async with contextlib.aclosing(session.synthesize_stream(LONG)) as chunks:
            async for _ in chunks:
                break
        await session.aclose()  # waits up to the close deadline for Cleared, then closes
        await until(lambda: dg.open == 0)
        assert len(provider.idle) == 0 and provider.limiter.in_use(await provider.key("")) == 0
        await provider.aclose()
    assert dg.connections[0].messages == ["Speak", "Flush", "Clear", "Clear", "Close"]


async def test_a_socket_is_reused_only_after_cleared() -> None:
    async with DeepgramSpeakDouble(chunk_ms=20) as dg:
        provider = deepgram(dg)
        session = provider.open_session(SynthesisOptions(sample_rate=RATE))
        try:
            async with contextlib.aclosing(session.synthesize_stream(LONG)) as chunks:
                async for _ in chunks:
                    break  # abandoned after its first chunk: audio still in flight
            audio = b"".join([pcm async for pcm in session.synthesize_stream("Next one.")])
        finally:
            await session.aclose()
    assert heard_text(audio, RATE) == "Next one."  # nothing of the abandoned piece leaks in
    [conn] = dg.connections
    assert conn.messages[:5] == ["Speak", "Flush", "Clear", "Speak", "Flush"]


async def test_rate_is_the_clients_where_deepgram_has_it() -> None:
    async with DeepgramSpeakDouble() as dg:
        provider = deepgram(dg)
        for asked, used in [(8000, 8000), (48000, 48000), (22050, 24000), (0, 24000)]:
            session = provider.open_session(SynthesisOptions(sample_rate=asked))
            try:
                audio = b"".join([pcm async for pcm in session.synthesize_stream("Rate.")])
            finally:
                await session.aclose()
            assert session.sample_rate == used and heard_text(audio, used) == "Rate."
    # 22050 and "no preference" both get 24000: the second stream reuses the first one's socket.
    assert [c.query["sample_rate"] for c in dg.connections] == ["8000", "48000", "24000"]


@pytest.mark.parametrize("kind", ["429", "connect-refused"])
async def test_memory_and_sockets_stay_bounded_in_a_storm_of_refusals(kind: str) -> None:
    async with DeepgramSpeakDouble() as dg:
        url = dg.url if kind == "429" else "ws://127.0.0.1:9"  # port 9: nothing listens
        provider = DeepgramAura(base_url=url, deadlines=FAST, keys=EnvKeySource(KEYS))
        chain = ChainSynthesizer({"deepgram": provider}, ["deepgram"])
        options = SynthesisOptions(tenant_id="tenant-test", sample_rate=RATE)

        async def attempts(n: int) -> None:
            for _ in range(n):
                dg.faults.append(Fault(status=429, retry_after="1"))
                with pytest.raises(Unavailable):
                    await chain.synthesize("Refused.", options)

        await attempts(30)  # warm: clients, metrics children, imports
        gc.collect()
        tracemalloc.start(12)
        try:
            before = tracemalloc.take_snapshot().filter_traces(NOT_THE_DOUBLE)
            await attempts(200)
            gc.collect()
            after = tracemalloc.take_snapshot().filter_traces(NOT_THE_DOUBLE)
        finally:
            tracemalloc.stop()
        stats = after.compare_to(before, "filename")
        grown = sum(s.size_diff for s in stats)
        assert grown < 256 * 1024, f"{grown} bytes kept over 200 refused attempts"
        assert provider.limiter.in_use(await provider.key("tenant-test")) == 0 and dg.open == 0
        assert len(provider._clients) == 1
        await provider.aclose()
