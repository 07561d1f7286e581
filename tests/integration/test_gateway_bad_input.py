"""Bad input and failing services: a clear status, nothing lost for anyone else."""

from __future__ import annotations

import asyncio

import grpc
import grpc.aio
import pytest

from common.gen.voiceai.common.v1 import audio_pb2
from common.gen.voiceai.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from common.tasks import cancel_and_wait
from tests.caller import ConverseCaller, linear16
from tests.credentials import bearer
from tests.doubles.mesh_services import ScriptedStt, tone
from tests.integration.gateway_harness import inline_config, scripted_mesh

MD = (("x-tenant-id", "tenant-test"), bearer("tenant-test"))


async def _converse(
    ch: grpc.aio.Channel, requests: list[gateway_pb2.ConverseRequest], md=MD
) -> grpc.aio.AioRpcError:  # type: ignore[no-untyped-def]
    call = gateway_pb2_grpc.CallGatewayServiceStub(ch).Converse(metadata=md)
    try:
        for r in requests:
            await call.write(r)
        await call.done_writing()  # a caller that is done says so: the status need not wait
    except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
        pass  # rejected already; the status is read below
    with pytest.raises(grpc.aio.AioRpcError) as info:
        async for _ in call:
            pass
    return info.value


def _cfg(**kw) -> gateway_pb2.ConverseRequest:  # type: ignore[no-untyped-def]
    return gateway_pb2.ConverseRequest(config=kw.pop("config", inline_config()))


def _with_chain(**chains: list[str]) -> gateway_pb2.CallConfig:
    config = inline_config()
    for name, chain in chains.items():
        getattr(config.agent, name).extend(chain)
    return config


AUDIO_20MS = gateway_pb2.ConverseRequest(audio=b"\x00" * 640)

BAD_CASES = {
    "audio before config": ([AUDIO_20MS], grpc.StatusCode.INVALID_ARGUMENT, "first message must be 'config'"),
    "unsupported rate": (
        [
            gateway_pb2.ConverseRequest(
                config=gateway_pb2.CallConfig(agent_id="demo", caller_audio_format=linear16(44100))
            )
        ],
        grpc.StatusCode.INVALID_ARGUMENT,
        "sample_rate_hertz 44100",
    ),
    "unsupported encoding": (
        [
            gateway_pb2.ConverseRequest(
                config=gateway_pb2.CallConfig(
                    agent_id="demo",
                    caller_audio_format=audio_pb2.AudioFormat(
                        encoding=audio_pb2.AUDIO_ENCODING_ALAW, sample_rate_hertz=8000
                    ),
                )
            )
        ],
        grpc.StatusCode.INVALID_ARGUMENT,
        "encoding ALAW is not supported",
    ),
    "unknown agent": (
        [
            gateway_pb2.ConverseRequest(
                config=gateway_pb2.CallConfig(agent_id="nope", caller_audio_format=linear16())
            )
        ],
        grpc.StatusCode.NOT_FOUND,
        "agent 'nope'",
    ),
    "no agent": (
        [gateway_pb2.ConverseRequest(config=gateway_pb2.CallConfig(caller_audio_format=linear16()))],
        grpc.StatusCode.INVALID_ARGUMENT,
        "agent_id",
    ),
    "frame over 1 s": (
        [_cfg(), gateway_pb2.ConverseRequest(audio=b"\x00" * 32002)],
        grpc.StatusCode.INVALID_ARGUMENT,
        "over the 1000 ms limit",
    ),
    "odd-length LINEAR16": (
        [_cfg(), gateway_pb2.ConverseRequest(audio=b"\x00" * 641)],
        grpc.StatusCode.INVALID_ARGUMENT,
        "whole 16-bit samples",
    ),
    "second config": ([_cfg(), AUDIO_20MS, _cfg()], grpc.StatusCode.INVALID_ARGUMENT, "only be sent once"),
    "bad dtmf": (
        [_cfg(), gateway_pb2.ConverseRequest(dtmf="12x")],
        grpc.StatusCode.INVALID_ARGUMENT,
        "dtmf must be",
    ),
    "unknown provider": (
        [_cfg(config=_with_chain(tts_providers=["local", "polly"]))],
        grpc.StatusCode.INVALID_ARGUMENT,
        "config.agent.tts_providers: unknown provider 'polly'",
    ),
    "bad turn taking": (
        [_cfg(config=inline_config(min_interruption_ms=10))],
        grpc.StatusCode.INVALID_ARGUMENT,
        "min_interruption_ms must be",
    ),
}


async def test_bad_input_gets_a_clear_status_while_a_good_call_goes_on() -> None:
    stt = ScriptedStt(["hello there.", "still here?"])
    async with scripted_mesh(stt) as mesh, grpc.aio.insecure_channel(mesh.address) as ch:
        async with ConverseCaller(ch, inline_config()) as good:
            await good.send_pcm(tone(600))
            for name, (requests, code, text) in BAD_CASES.items():
                err = await _converse(ch, requests)
                assert err.code() == code, name
                assert text in (err.details() or ""), f"{name}: {err.details()}"
            err = await _converse(ch, [_cfg()], md=())
            assert err.code() == grpc.StatusCode.UNAUTHENTICATED
            assert "x-tenant-id" in (err.details() or "")
            await good.wait_for(good.turn_done(1))
            await good.send_pcm(tone(600))
            await good.wait_for(good.turn_done(2))
            ended = await good.hangup()
    assert ended.reason == gateway_pb2.END_REASON_CALLER_HANGUP and ended.turns == 2


async def test_services_down_at_call_start_is_unavailable_naming_the_service() -> None:
    async with (
        scripted_mesh(ScriptedStt([]), services_up=False) as mesh,
        grpc.aio.insecure_channel(mesh.address) as ch,
    ):
        err = await _converse(ch, [_cfg()])
    assert err.code() == grpc.StatusCode.UNAVAILABLE
    assert "service at 127.0.0.1:" in (err.details() or "")
    assert any(
        name in (err.details() or "") for name in ("speech-to-text", "language-model", "text-to-speech")
    )


async def test_client_that_stops_reading_is_cut_off_with_bounded_memory() -> None:
    stt = ScriptedStt(["tell me everything."])
    # No BDP probing: the client's HTTP/2 window stays at its 64 KiB default, as a stalled
    # phone bridge's would, so only the gateway's own bound can end the call.
    options = [("grpc.http2.bdp_probe", 0)]
    async with (
        scripted_mesh(stt, outbox_limit=40) as mesh,
        grpc.aio.insecure_channel(mesh.address, options=options) as ch,
    ):
        caller = ConverseCaller(ch, inline_config(greeting="Hello! " * 40), read=False)
        async with caller:
            for _ in range(400):  # the greeting alone is ~4 s of audio
                await caller.silence(20)
                if mesh.stt.streams.total and mesh.open_streams() == 0:
                    break
            assert mesh.open_streams() == 0, "the gateway kept a call alive for a client that reads nothing"
            # The status is queued behind the unread audio; a late read finds it.
            with pytest.raises(grpc.aio.AioRpcError) as info:
                async for _ in caller.call:
                    pass
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "read no agent audio" in (info.value.details() or "")


@pytest.mark.parametrize(
    ("md", "code", "fragment"),
    [
        ((("x-tenant-id", "tenant-test"),), grpc.StatusCode.UNAUTHENTICATED, "authorization"),
        (
            (("x-tenant-id", "tenant-test"), ("authorization", "Bearer not.a.jwt")),
            grpc.StatusCode.UNAUTHENTICATED,
            "",
        ),
        (
            (("x-tenant-id", "tenant-test"), bearer("tenant-other")),
            grpc.StatusCode.PERMISSION_DENIED,
            "tenant",
        ),
        (
            (("x-tenant-id", "tenant-test"), bearer("tenant-test", ("viewer",))),
            grpc.StatusCode.PERMISSION_DENIED,
            "",
        ),
    ],
)
async def test_converse_needs_a_credential_of_the_tenant_with_the_call_role(
    md: tuple[tuple[str, str], ...], code: grpc.StatusCode, fragment: str
) -> None:
    async with scripted_mesh(ScriptedStt([])) as mesh, grpc.aio.insecure_channel(mesh.address) as ch:
        err = await _converse(ch, [_cfg()], md=md)
    assert err.code() == code and fragment in (err.details() or "")
    assert "eyJ" not in (err.details() or "")  # never echoes a token


CONVERSE = "/voiceai.gateway.v1.CallGatewayService/Converse"
SILENCE = gateway_pb2.ConverseRequest(audio=b"\x00" * 640).SerializeToString()
MID_CALL_ERRORS = {  # raw bytes, so a message that does not parse can be sent too
    "bad dtmf": (gateway_pb2.ConverseRequest(dtmf="12x").SerializeToString(), "dtmf must be"),
    "odd-length LINEAR16": (
        gateway_pb2.ConverseRequest(audio=b"\x00" * 641).SerializeToString(),
        "whole 16-bit samples",
    ),
    "second config": (_cfg().SerializeToString(), "only be sent once"),
    "unparsable message": (b"\x1a\x01\xff", "could not be parsed"),  # dtmf that is not UTF-8
}


async def _fail_mid_call(
    ch: grpc.aio.Channel, bad: bytes, half_close: bool
) -> tuple[grpc.aio.AioRpcError, list[gateway_pb2.ConverseResponse]]:
    """A caller that streams audio as fast as the stream takes it, sends ``bad``, keeps
    streaming until call_ended arrives, then stops (and half-closes, if ``half_close``)."""
    converse = ch.stream_stream(CONVERSE, response_deserializer=gateway_pb2.ConverseResponse.FromString)
    call = converse(metadata=MD)
    received: list[gateway_pb2.ConverseResponse] = []
    started = asyncio.Event()

    async def read() -> None:
        async for msg in call:
            received.append(msg)
            started.set()

    reader = asyncio.get_running_loop().create_task(read())
    try:
        await call.write(_cfg().SerializeToString())
        await asyncio.wait_for(started.wait(), 10)  # call_started: no audio races a refusal
        for _ in range(5):
            await call.write(SILENCE)
        await call.write(bad)
        async with asyncio.timeout(10):
            while not any(m.WhichOneof("event") == "call_ended" for m in received):
                await call.write(SILENCE)
                await asyncio.sleep(0)
        if half_close:
            await call.done_writing()
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await asyncio.wait_for(reader, 10)
    finally:
        call.cancel()
        await cancel_and_wait(reader)
    return info.value, received


async def test_a_mid_call_error_is_announced_then_sent_as_its_own_status() -> None:
    """Never INTERNAL: the status waits until the caller stops writing (grpc/grpc#36066)."""
    async with (
        scripted_mesh(ScriptedStt([])) as mesh,
        grpc.aio.insecure_channel(mesh.address) as ch,
    ):
        for attempt in range(5):
            for name, (bad, text) in MID_CALL_ERRORS.items():
                err, received = await _fail_mid_call(ch, bad, half_close=True)
                assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, (name, attempt, err.details())
                assert text in (err.details() or ""), (name, err.details())
                last = received[-1]
                assert last.WhichOneof("event") == "call_ended", name  # and exactly one, last
                assert last.call_ended.reason == gateway_pb2.END_REASON_INVALID_INPUT
                assert last.call_ended.message == err.details()
        # A caller that stops writing but never half-closes still gets the status.
        err, _ = await _fail_mid_call(ch, MID_CALL_ERRORS["bad dtmf"][0], half_close=False)
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert mesh.open_streams() == 0
