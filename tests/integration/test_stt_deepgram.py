"""stt_svc on Deepgram Nova-3: the real deepgram-sdk client against the listen websocket double
(tests.doubles.deepgram_api) over loopback, through the real gRPC servicer.

Audio is tone words, so every test checks the exact words heard: a fallback or replay that lost,
repeated or reordered audio would show in the finals. The local provider is a light stand-in
(``ToneWordsRecognizer``): no Whisper model is loaded here.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import tracemalloc
from collections.abc import AsyncIterator, Sequence

import grpc
import grpc.aio
import pytest
from google.rpc import error_details_pb2, status_pb2

from common.gen.voiceai.common.v1 import audio_pb2
from common.gen.voiceai.stt.v1 import stt_pb2, stt_pb2_grpc
from common.providers import FALLBACKS, EnvKeySource
from stt_svc.app import Settings, build_host
from stt_svc.chain import ChainRecognizer
from stt_svc.providers.base import RecognitionOptions
from stt_svc.providers.deepgram_nova import DeepgramConfig, DeepgramRecognizer
from tests.conftest import running
from tests.conftest import stt_md as md
from tests.doubles.deepgram_api import DeepgramListenDouble, ListenFault, ToneWordsRecognizer
from tests.doubles.tone_words import speak

R = stt_pb2.StreamingRecognizeRequest
TENANT_KEY_ENV = "DEEPGRAM_API_KEY__TENANT_TEST"
FIRST = ["alpha", "bravo", "charlie"]
SECOND = ["delta", "echo", "foxtrot"]


def silence(ms: int) -> bytes:
    return bytes(32 * ms)


AUDIO = speak(FIRST) + silence(800) + speak(SECOND) + silence(800)


def config(providers: Sequence[str] = ("deepgram", "local"), **kw: object) -> R:
    fmt = audio_pb2.AudioFormat(
        encoding=audio_pb2.AUDIO_ENCODING_LINEAR16, sample_rate_hertz=16000, channels=1
    )
    kw.setdefault("language_code", "en-US")
    cfg = stt_pb2.RecognitionConfig(audio_format=fmt, interim_results=True, providers=list(providers), **kw)  # type: ignore[arg-type]
    return R(config=cfg)


def dg_config(*urls: str, **kw: object) -> DeepgramConfig:
    return DeepgramConfig(urls=tuple(urls), **kw)  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def stt(deepgram: DeepgramRecognizer, local: ToneWordsRecognizer | None = None) -> AsyncIterator[str]:
    engines = {"local": local or ToneWordsRecognizer(), "deepgram": deepgram}
    host = build_host(Settings(), ChainRecognizer(engines, ["deepgram", "local"]))
    try:
        async with running(host) as addr:
            yield addr
    finally:
        await deepgram.aclose()


async def recognize(
    addr: str, audio: bytes, cfg: R, finalize: bool = False
) -> list[stt_pb2.StreamingRecognizeResponse]:
    async with grpc.aio.insecure_channel(addr) as ch:
        call = stt_pb2_grpc.SpeechToTextServiceStub(ch).StreamingRecognize(metadata=md())
        await call.write(cfg)
        for i in range(0, len(audio), 640):  # 20 ms messages
            await call.write(R(audio=audio[i : i + 640]))
        if finalize:
            await call.write(R(finalize=stt_pb2.Finalize()))
        await call.done_writing()
        return [r async for r in call]


def finals(responses: list[stt_pb2.StreamingRecognizeResponse]) -> list[stt_pb2.FinalResult]:
    return [r.final for r in responses if r.WhichOneof("event") == "final"]


def words_of(responses: list[stt_pb2.StreamingRecognizeResponse]) -> list[tuple[str, int, int]]:
    return [(w.word.lower(), w.start_ms, w.end_ms) for f in finals(responses) for w in f.words]


def kinds(responses: list[stt_pb2.StreamingRecognizeResponse]) -> list[str]:
    return [str(r.WhichOneof("event")) for r in responses]


EXPECTED_WORDS = [(w, 200 * i, 200 * i + 160) for i, w in enumerate(FIRST)] + [
    (w, 1400 + 200 * i, 1400 + 200 * i + 160) for i, w in enumerate(SECOND)
]


def assert_heard_once(responses: list[stt_pb2.StreamingRecognizeResponse]) -> None:
    """Both utterances, each word once at its place on the stream's timeline, one final per
    utterance, and a well-formed event sequence."""
    assert [f.text.lower() for f in finals(responses)] == [" ".join(FIRST), " ".join(SECOND)]
    assert words_of(responses) == EXPECTED_WORDS
    ks = [k for k in kinds(responses) if k not in ("interim", "usage")]  # usage: issue 17
    assert ks == ["speech_started", "final", "utterance_end"] * 2


def fallbacks(frm: str, to: str, reason: str) -> float:
    return FALLBACKS.labels("stt", frm, to, reason)._value.get()


async def test_words_offsets_options_and_the_tenants_key() -> None:
    async with DeepgramListenDouble() as dg:
        env = {"DEEPGRAM_API_KEY": "deployment-key", TENANT_KEY_ENV: "tenant-key"}
        async with stt(DeepgramRecognizer(dg_config(dg.url), EnvKeySource(env))) as addr:
            cfg = config(keyterms=["Acme Dental", "Invisalign"], endpointing_ms=300)
            responses = await recognize(addr, AUDIO, cfg)
    assert_heard_once(responses)
    assert "interim" in kinds(responses)
    (req,) = dg.requests
    assert req.authorization == "Token tenant-key"
    assert req.query["keyterm"] == ["Acme Dental", "Invisalign"]
    assert (req.param("model"), req.param("language"), req.param("smart_format")) == (
        "nova-3",
        "en-US",
        "true",
    )
    assert (req.param("endpointing"), req.param("utterance_end_ms")) == ("300", "1000")
    assert (req.param("encoding"), req.param("sample_rate"), req.param("vad_events")) == (
        "linear16",
        "16000",
        "true",
    )
    assert req.control == ["CloseStream"] and req.audio_bytes == len(AUDIO)


async def test_default_key_multilingual_and_model_from_the_config() -> None:
    async with DeepgramListenDouble() as dg:
        async with stt(
            DeepgramRecognizer(dg_config(dg.url), EnvKeySource({"DEEPGRAM_API_KEY": "deployment-key"}))
        ) as addr:
            cfg = config(language_code="multi", model="nova-3-general", keyterms=["Acme"])
            responses = await recognize(addr, AUDIO, cfg)
    assert_heard_once(responses)
    (req,) = dg.requests
    assert req.authorization == "Token deployment-key"
    assert (req.param("language"), req.param("model"), req.query["keyterm"]) == (
        "multi",
        "nova-3-general",
        ["Acme"],
    )


async def test_rate_limited_handshake_falls_back_to_local_with_every_word() -> None:
    local = ToneWordsRecognizer()
    async with DeepgramListenDouble() as dg:
        dg.faults.append(ListenFault(status=429, retry_after_s=7))
        before = fallbacks("deepgram", "local", "rate_limited")
        async with stt(DeepgramRecognizer(dg_config(dg.url), EnvKeySource({})), local) as addr:
            responses = await recognize(addr, AUDIO, config())
    assert_heard_once(responses)
    assert local.opened == 1 and [r.status for r in dg.requests] == [429]
    assert fallbacks("deepgram", "local", "rate_limited") == before + 1


async def test_rate_limited_with_no_fallback_is_resource_exhausted_with_retry_info(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with DeepgramListenDouble() as dg:
        dg.faults.append(ListenFault(status=429, retry_after_s=7))
        async with stt(
            DeepgramRecognizer(dg_config(dg.url), EnvKeySource({"DEEPGRAM_API_KEY": "secret-key-123"}))
        ) as addr:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await recognize(addr, AUDIO, config(["deepgram"]))
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "rate limit" in (err.value.details() or "")
    status = status_pb2.Status.FromString(
        dict(err.value.trailing_metadata() or ())["grpc-status-details-bin"]
    )
    retry = error_details_pb2.RetryInfo()
    assert any(d.Unpack(retry) for d in status.details) and retry.retry_delay.seconds == 7
    assert "secret-key-123" not in caplog.text and "secret-key-123" not in (err.value.details() or "")


async def test_server_error_at_handshake_moves_to_the_next_endpoint() -> None:
    async with DeepgramListenDouble() as bad, DeepgramListenDouble() as good:
        bad.faults.append(ListenFault(status=503))
        recognizer = DeepgramRecognizer(dg_config(bad.url, good.url, failure_penalty_s=60), EnvKeySource({}))
        async with stt(recognizer) as addr:
            first = await recognize(addr, AUDIO, config(["deepgram"]))
            # The failed URL is avoided for a while: the next stream goes straight to the good one.
            second = await recognize(addr, AUDIO, config(["deepgram"]))
    assert_heard_once(first)
    assert_heard_once(second)
    # The first stream tried the bad URL once, then the good one; the second went straight there.
    assert len(bad.requests) == 1 and len(good.requests) == 2
    assert recognizer.endpoints.failed() == [bad.url]


async def test_server_error_with_one_endpoint_falls_back_to_local() -> None:
    async with DeepgramListenDouble() as dg:
        dg.faults.append(ListenFault(status=500))
        async with stt(DeepgramRecognizer(dg_config(dg.url), EnvKeySource({}))) as addr:
            responses = await recognize(addr, AUDIO, config())
    assert_heard_once(responses)


async def test_slow_first_result_misses_its_deadline_and_local_hears_everything() -> None:
    local = ToneWordsRecognizer()
    async with DeepgramListenDouble() as dg:
        dg.faults.append(ListenFault(first_result_delay_s=30))
        before = fallbacks("deepgram", "local", "timeout")
        recognizer = DeepgramRecognizer(dg_config(dg.url, first_result_timeout_s=0.3), EnvKeySource({}))
        async with stt(recognizer, local) as addr:
            responses = await recognize(addr, AUDIO, config())
            await _until(lambda: dg.open == 0)  # the abandoned websocket was closed
    assert_heard_once(responses)
    assert local.opened == 1
    assert fallbacks("deepgram", "local", "timeout") == before + 1


async def test_disconnect_mid_stream_replays_uncovered_audio_to_local() -> None:
    local = ToneWordsRecognizer()
    async with DeepgramListenDouble() as dg:
        # The first utterance is final on Deepgram; the connection drops inside the second.
        dg.faults.append(ListenFault(disconnect_after_words=4))
        before = fallbacks("deepgram", "local", "disconnect")
        async with stt(DeepgramRecognizer(dg_config(dg.url), EnvKeySource({})), local) as addr:
            responses = await recognize(addr, AUDIO, config())
    assert_heard_once(responses)
    assert dg.finals == [" ".join(FIRST)] and local.opened == 1
    assert fallbacks("deepgram", "local", "disconnect") == before + 1
    await _until(lambda: not our_tasks())


async def test_disconnect_mid_stream_replays_to_a_second_deepgram_endpoint() -> None:
    async with DeepgramListenDouble() as one, DeepgramListenDouble() as two:
        one.faults.append(ListenFault(disconnect_after_words=4))
        two.faults.append(ListenFault(disconnect_after_words=4))
        local = ToneWordsRecognizer()
        async with stt(DeepgramRecognizer(dg_config(one.url, two.url), EnvKeySource({})), local) as addr:
            responses = await recognize(addr, AUDIO, config(["deepgram"]))
    assert_heard_once(responses)
    # One endpoint finalized the first utterance, the other (after the replay) the second.
    assert sorted([*one.finals, *two.finals]) == sorted([" ".join(FIRST), " ".join(SECOND)])
    assert local.opened == 0


async def test_finalize_and_keepalive_reach_deepgram() -> None:
    async with DeepgramListenDouble() as dg:
        recognizer = DeepgramRecognizer(dg_config(dg.url, keepalive_s=0.05), EnvKeySource({}))
        async with stt(recognizer) as addr:
            async with grpc.aio.insecure_channel(addr) as ch:
                call = stt_pb2_grpc.SpeechToTextServiceStub(ch).StreamingRecognize(metadata=md())
                await call.write(config(["deepgram"]))
                await _until(lambda: bool(dg.requests) and "KeepAlive" in dg.requests[0].control)
                pcm = speak(["golf", "hotel"])
                for i in range(0, len(pcm), 640):
                    await call.write(R(audio=pcm[i : i + 640]))
                await call.write(R(finalize=stt_pb2.Finalize()))
                first = await _next_final(call)
                await call.done_writing()
                rest = [r async for r in call]
    assert first.text.lower() == "golf hotel" and not first.speech_final
    assert "Finalize" in dg.requests[0].control and not finals(rest)


async def test_over_cap_goes_to_the_next_provider_or_is_resource_exhausted() -> None:
    async with DeepgramListenDouble() as dg:
        recognizer = DeepgramRecognizer(
            dg_config(dg.url, max_streams_per_key=1, queue_timeout_s=0.02), EnvKeySource({})
        )
        local = ToneWordsRecognizer()
        async with stt(recognizer, local) as addr:
            async with grpc.aio.insecure_channel(addr) as ch:
                holder = stt_pb2_grpc.SpeechToTextServiceStub(ch).StreamingRecognize(metadata=md())
                await holder.write(config(["deepgram"]))
                await _until(lambda: recognizer.limiter.in_use() == 1)
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await recognize(addr, AUDIO, config(["deepgram"]))
                assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                assert "concurrency cap" in (err.value.details() or "")
                responses = await recognize(addr, AUDIO, config(["deepgram", "local"]))
                assert_heard_once(responses)
                assert local.opened == 1
                await holder.done_writing()
                assert [r async for r in holder] == []
        assert recognizer.limiter.in_use() == 0


async def test_bad_provider_names_and_unconfigured_chains_name_the_field() -> None:
    async with DeepgramListenDouble() as dg:
        engines = {"local": ToneWordsRecognizer()}  # no Deepgram on this instance
        async with running(build_host(Settings(), ChainRecognizer(engines, ["local"]))) as addr:
            with pytest.raises(grpc.aio.AioRpcError) as bad:
                await recognize(addr, AUDIO, config(["deepgrum"]))
            with pytest.raises(grpc.aio.AioRpcError) as missing:
                await recognize(addr, AUDIO, config(["deepgram"]))
            assert_heard_once(await recognize(addr, AUDIO, config(["deepgram", "local"])))
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "config.providers" in (
        bad.value.details() or ""
    )
    assert missing.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "deepgram" in (missing.value.details() or "") and not dg.requests


async def test_cancelled_call_closes_the_deepgram_websocket() -> None:
    async with DeepgramListenDouble() as dg:
        async with stt(DeepgramRecognizer(dg_config(dg.url), EnvKeySource({}))) as addr:
            async with grpc.aio.insecure_channel(addr) as ch:
                call = stt_pb2_grpc.SpeechToTextServiceStub(ch).StreamingRecognize(metadata=md())
                await call.write(config(["deepgram", "local"]))
                await call.write(R(audio=speak(["kilo"])))
                await _until(lambda: dg.open == 1)
                call.cancel()
            await _until(lambda: dg.open == 0)
            await _until(lambda: not our_tasks())  # reader, keep-alive and chain pump all ended


def our_tasks() -> list[asyncio.Task[object]]:
    return [t for t in asyncio.all_tasks() if t.get_name().startswith(("stt-deepgram", "stt-chain"))]


async def _next_final(call: grpc.aio.StreamStreamCall) -> stt_pb2.FinalResult:
    async for r in call:
        if r.WhichOneof("event") == "final":
            return r.final
    raise AssertionError("the stream ended without a final")


async def _until(cond: object, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not cond():  # type: ignore[operator]  # noqa: ASYNC110 - state of another server
            await asyncio.sleep(0.01)


async def test_memory_stays_bounded_in_a_429_storm() -> None:
    """Hundreds of refused handshakes, each falling back to local: nothing accumulates in the
    provider, the chain, the SDK or websockets (the double keeps only its last few requests)."""
    async with DeepgramListenDouble(keep_requests=4) as dg:
        recognizer = DeepgramRecognizer(dg_config(dg.url), EnvKeySource({"DEEPGRAM_API_KEY": "k"}))
        chain = ChainRecognizer(
            {"local": ToneWordsRecognizer(), "deepgram": recognizer}, ["deepgram", "local"]
        )
        options = RecognitionOptions(providers=("deepgram", "local"))

        async def storm(n: int) -> None:
            for _ in range(n):
                dg.faults.append(ListenFault(status=429, retry_after_s=1))
                stream = await chain.open(options)
                await stream.end_input()
                assert [e async for e in stream.events()] == []
                await stream.aclose()

        ours = [tracemalloc.Filter(True, f"*/{p}/*") for p in ("stt_svc", "common", "deepgram", "websockets")]
        # Each switch logs a warning; pytest's log capture would keep every record (and the
        # error it names) for the test's report, which is not the service's memory.
        quiet = logging.getLogger("common.providers")
        quiet.setLevel(logging.ERROR)
        tracemalloc.start()
        try:
            await storm(50)  # warm: caches, metrics children, lazy imports
            gc.collect()
            before = tracemalloc.take_snapshot().filter_traces(ours)
            await storm(300)
            gc.collect()
            after = tracemalloc.take_snapshot().filter_traces(ours)
        finally:
            tracemalloc.stop()
            quiet.setLevel(logging.NOTSET)
        await recognizer.aclose()
    grown = sum(s.size_diff for s in after.compare_to(before, "filename"))
    assert grown < 16 * 1024, [str(s) for s in after.compare_to(before, "lineno")[:5]]
    assert recognizer.limiter.in_use() == 0 and recognizer.endpoints.in_flight() == {dg.url: 0}


async def test_a_missing_or_rejected_key_is_failed_precondition_naming_the_variable() -> None:
    async with DeepgramListenDouble() as dg:
        dg.faults.append(ListenFault(status=401))
        cloud = DeepgramRecognizer(DeepgramConfig(), EnvKeySource({}))  # Deepgram's cloud, and no key at all
        async with stt(cloud) as addr:
            with pytest.raises(grpc.aio.AioRpcError) as no_key:
                await recognize(addr, AUDIO, config(["deepgram"]))
            assert_heard_once(await recognize(addr, AUDIO, config(["deepgram", "local"])))
        async with stt(
            DeepgramRecognizer(dg_config(dg.url), EnvKeySource({"DEEPGRAM_API_KEY": "revoked"}))
        ) as addr:
            with pytest.raises(grpc.aio.AioRpcError) as rejected:
                await recognize(addr, AUDIO, config(["deepgram"]))
    for err in (no_key, rejected):
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "DEEPGRAM_API_KEY" in (err.value.details() or "")
    assert "revoked" not in (rejected.value.details() or "")


async def test_a_stalled_stream_misses_the_inactivity_deadline_and_local_takes_over() -> None:
    local = ToneWordsRecognizer()
    async with DeepgramListenDouble() as dg:
        dg.faults.append(ListenFault(stall_after_words=4))  # answers the first utterance, then nothing
        before = fallbacks("deepgram", "local", "timeout")
        recognizer = DeepgramRecognizer(dg_config(dg.url, inactivity_timeout_s=0.3), EnvKeySource({}))
        async with stt(recognizer, local) as addr:
            responses = await recognize(addr, AUDIO, config())
            await _until(lambda: dg.open == 0)
    assert_heard_once(responses)
    assert local.opened == 1 and fallbacks("deepgram", "local", "timeout") == before + 1


async def test_stopping_the_service_closes_the_providers_http_pool() -> None:
    async with DeepgramListenDouble() as dg:
        deepgram = DeepgramRecognizer(dg_config(dg.url), EnvKeySource({}))
        host = build_host(
            Settings(), ChainRecognizer({"local": ToneWordsRecognizer(), "deepgram": deepgram}, ["deepgram"])
        )
        async with running(host) as addr:
            assert_heard_once(await recognize(addr, AUDIO, config(providers=["deepgram"])))
            http = deepgram._http
            assert http is not None and not http.is_closed
        assert http.is_closed
