"""``place_call`` against a scripted gateway on loopback: pacing, turn waits, barge-in, failures.

The fake gateway speaks the real Converse protocol through the real server stack (ServiceHost,
interceptor): it hears the caller by energy, answers every utterance with a tone and the events
the real gateway sends, and records when every caller frame arrived.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc.aio
import numpy as np
import pytest

from common.audio import mulaw_to_pcm16, pcm16_to_mulaw
from common.errors import InvalidArgument, NotFound
from common.gen.voiceai.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from common.server import ServiceBinding, ServiceHost
from common.settings import ServiceSettings
from common.tasks import cancel_and_wait
from gateway.cli import CallOptions, Utterance, main, place_call
from gateway.wav import read_pcm16, write_pcm16
from tests.conftest import running

pytestmark = pytest.mark.slow  # real-time audio: a few seconds per call

R = gateway_pb2.ConverseResponse
QUIET_FRAMES_TO_END = 10  # 200 ms of silence ends the caller's turn


def tone_pcm(ms: int, rate: int, hz: float = 300.0, amp: int = 6000) -> bytes:
    t = np.arange(rate * ms // 1000) / rate
    return (amp * np.sin(2 * np.pi * hz * t)).astype("<i2").tobytes()


@dataclass
class Heard:
    """What the fake gateway saw of one call."""

    frames: list[tuple[float, int]] = field(default_factory=list)  # (arrival, bytes)
    speech_starts: list[float] = field(default_factory=list)
    reply_ends: list[float] = field(default_factory=list)
    tenant: str = ""
    authorization: str = ""
    hung_up: bool = False
    half_closed: bool = False
    ended_at: float = 0.0  # when the fake sent call_ended


class FakeGateway(gateway_pb2_grpc.CallGatewayServiceServicer):
    """Answers each caller utterance with ``reply_ms`` of tone; barge-in clears it.

    ``end_after_turn`` ends the call with SERVICE_ERROR and an OK status after that turn;
    ``fail_after_turn`` ends it as the real gateway ends a call on bad input: call_ended with
    INVALID_INPUT, then INVALID_ARGUMENT once the caller has stopped writing.
    """

    def __init__(
        self,
        *,
        greeting_ms: int = 300,
        reply_ms: int = 600,
        end_after_turn: int | None = None,
        fail_after_turn: int | None = None,
    ) -> None:
        self.greeting_ms = greeting_ms
        self.reply_ms = reply_ms
        self.end_after_turn = end_after_turn
        self.fail_after_turn = fail_after_turn
        self.calls: list[Heard] = []

    async def Converse(  # noqa: N802
        self, request_iterator: AsyncIterator[gateway_pb2.ConverseRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[gateway_pb2.ConverseResponse]:
        requests = aiter(request_iterator)
        first = await anext(requests)
        cfg = first.config
        if cfg.agent_id != "demo":
            raise NotFound(f"no agent {cfg.agent_id!r} for this tenant")
        md = dict(context.invocation_metadata() or ())
        heard = Heard(tenant=md.get("x-tenant-id", ""), authorization=md.get("authorization", ""))
        self.calls.append(heard)
        rate, mulaw = cfg.caller_audio_format.sample_rate_hertz, cfg.caller_audio_format.encoding == 2
        out: asyncio.Queue[R | Exception | None] = asyncio.Queue()
        state = {"turn": 0, "speaking": False, "loud": False, "quiet": 0}
        reply: asyncio.Task[None] | None = None

        async def speak(turn: int, text: str, ms: int, stage_ms: int) -> None:
            frame = rate * 20 // 1000 * 2
            pcm = tone_pcm(ms, rate)
            state["speaking"] = True
            try:
                out.put_nowait(R(agent_speech=gateway_pb2.AgentSpeech(text=text, turn=turn)))
                for i in range(0, len(pcm), frame):
                    chunk = pcm[i : i + frame]
                    out.put_nowait(R(audio=pcm16_to_mulaw(chunk) if mulaw else chunk))
                    await asyncio.sleep(0.02)
                heard.reply_ends.append(time.monotonic())
                if turn:
                    out.put_nowait(metrics(turn, stage_ms, interrupted=False))
                    if turn == self.end_after_turn:
                        out.put_nowait(ended(gateway_pb2.END_REASON_SERVICE_ERROR, "tts_svc went away"))
                        out.put_nowait(None)
                    if turn == self.fail_after_turn:
                        out.put_nowait(ended(gateway_pb2.END_REASON_INVALID_INPUT, "bad caller audio"))
                        heard.ended_at = time.monotonic()
            finally:
                state["speaking"] = False

        def metrics(turn: int, base: int, interrupted: bool) -> R:
            return R(
                turn_metrics=gateway_pb2.TurnMetrics(
                    turn=turn,
                    stt_final_ms=base,
                    end_of_turn_ms=base + 1,
                    llm_first_token_ms=base + 2,
                    tts_first_audio_ms=-1 if interrupted else base + 3,
                    first_audio_out_ms=-1 if interrupted else base + 4,
                    interrupted=interrupted,
                )
            )

        def ended(reason: int, message: str) -> R:
            return R(call_ended=gateway_pb2.CallEnded(reason=reason, message=message, turns=state["turn"]))  # type: ignore[arg-type]

        async def listen() -> None:
            nonlocal reply
            async for req in requests:
                if req.WhichOneof("request") == "hangup":
                    heard.hung_up = True
                    break
                now = time.monotonic()
                heard.frames.append((now, len(req.audio)))
                pcm = mulaw_to_pcm16(req.audio) if mulaw else req.audio
                loud = float(np.abs(np.frombuffer(pcm, dtype="<i2")).mean()) > 500
                if loud and not state["loud"]:
                    state["loud"], state["quiet"] = True, 0
                    heard.speech_starts.append(now)
                    if state["speaking"] and reply is not None:  # barge-in
                        await cancel_and_wait(reply)
                        out.put_nowait(R(clear=gateway_pb2.Clear(turn=state["turn"])))
                        out.put_nowait(metrics(state["turn"], 400, interrupted=True))
                elif not loud and state["loud"]:
                    state["quiet"] += 1
                    if state["quiet"] >= QUIET_FRAMES_TO_END:
                        state["loud"] = False
                        state["turn"] += 1
                        turn = state["turn"]
                        final = gateway_pb2.CallerTranscript(
                            text=f"utterance {turn}", is_final=True, turn=turn
                        )
                        out.put_nowait(R(caller_transcript=final))
                        reply = asyncio.get_running_loop().create_task(
                            speak(turn, f"reply {turn}.", self.reply_ms, 100 * turn), name="fake-reply"
                        )
                elif loud:
                    state["quiet"] = 0
            else:
                heard.half_closed = True
            await cancel_and_wait(reply)
            if heard.ended_at:
                out.put_nowait(InvalidArgument("bad caller audio"))
                return
            out.put_nowait(ended(gateway_pb2.END_REASON_CALLER_HANGUP, "the caller hung up"))
            out.put_nowait(None)

        yield R(call_started=gateway_pb2.CallStarted(call_id="fake-call-1", agent_id=cfg.agent_id))
        greeting = asyncio.get_running_loop().create_task(
            speak(0, "Hello.", self.greeting_ms, 0), name="fake-greeting"
        )
        listener = asyncio.get_running_loop().create_task(listen(), name="fake-listen")
        try:
            while (msg := await out.get()) is not None:
                if isinstance(msg, Exception):
                    raise msg
                yield msg
        finally:
            await cancel_and_wait(greeting, reply, listener)


@contextlib.asynccontextmanager
async def fake_gateway(**kwargs: object) -> AsyncIterator[tuple[str, FakeGateway]]:
    servicer = FakeGateway(**kwargs)  # type: ignore[arg-type]
    host = ServiceHost(
        ServiceSettings(grace_period_s=0.5),
        [
            ServiceBinding(
                "voiceai.gateway.v1.CallGatewayService",
                lambda s: gateway_pb2_grpc.add_CallGatewayServiceServicer_to_server(servicer, s),
            )
        ],
        require_call_id=False,
    )
    async with running(host) as address:
        yield address, servicer


async def test_a_two_turn_call_is_paced_answered_and_reported() -> None:
    async with fake_gateway() as (address, gw):
        report = await place_call(
            CallOptions(
                gateway=address,
                tenant="acme",
                authorization="Bearer t0k3n",
                utterances=[Utterance(pcm=tone_pcm(400, 16000)), Utterance(pcm=tone_pcm(300, 16000))],
                pause_ms=300,
            )
        )
    assert report.ok, (report.error, report.notes)
    assert report.call_id == "fake-call-1" and report.end_reason == "END_REASON_CALLER_HANGUP"
    assert [(t.speaker, t.text) for t in report.transcript] == [
        ("agent", "Hello."),
        ("caller", "utterance 1"),
        ("agent", "reply 1."),
        ("caller", "utterance 2"),
        ("agent", "reply 2."),
    ]
    assert [(t.turn, t.stt_final_ms, t.first_audio_out_ms, t.interrupted) for t in report.turns] == [
        (1, 100, 104, False),
        (2, 200, 204, False),
    ]
    assert report.notes == []
    # The agent's audio came back whole: greeting + two replies.
    assert len(report.agent_audio) == len(tone_pcm(300, 16000)) + 2 * len(tone_pcm(600, 16000))
    heard = gw.calls[0]
    assert heard.tenant == "acme" and heard.authorization == "Bearer t0k3n" and heard.hung_up
    # 20 ms frames, one after another from the first to the hangup: silence fills every pause.
    arrivals = [t for t, _ in heard.frames]
    assert {n for _, n in heard.frames} == {640}
    gaps = np.diff(arrivals)
    assert gaps.max() < 0.25, f"the line went quiet for {gaps.max() * 1000:.0f} ms"
    # Real time, not faster: frames cover the wall time they took to arrive.
    elapsed = arrivals[-1] - arrivals[0]
    assert len(arrivals) * 0.02 == pytest.approx(elapsed, rel=0.05, abs=0.05)
    # The caller spoke only after the agent had finished and the pause had passed.
    assert len(heard.speech_starts) == 2
    assert heard.speech_starts[0] - heard.reply_ends[0] >= 0.3 - 0.03  # after the greeting
    assert heard.speech_starts[1] - heard.reply_ends[1] >= 0.3 - 0.03  # after reply 1
    assert heard.speech_starts[1] > heard.reply_ends[1]


async def test_an_utterance_with_a_pause_is_answered_to_its_end_before_the_next() -> None:
    # The pause splits utterance 1 into two caller turns: the fake answers the first part,
    # the second part cuts that answer off, and only the answer to the second part is the
    # reply the caller waits for before saying utterance 2.
    halting = tone_pcm(300, 16000) + b"\x00\x00" * (16000 * 300 // 1000) + tone_pcm(300, 16000)
    async with fake_gateway() as (address, gw):
        report = await place_call(
            CallOptions(
                gateway=address,
                utterances=[Utterance(pcm=halting), Utterance(pcm=tone_pcm(300, 16000))],
                pause_ms=200,
            )
        )
    assert report.ok, (report.error, report.notes)
    heard = gw.calls[0]
    assert len(heard.speech_starts) == 3  # two parts, then utterance 2
    assert [t.turn for t in report.turns] == [1, 2, 3] and report.turns[0].interrupted
    # heard.reply_ends: the greeting, the answer to the second part, the reply to utterance 2.
    assert heard.speech_starts[2] > heard.reply_ends[1], "utterance 2 talked over the answer to utterance 1"


async def test_barge_in_talks_over_the_reply_and_the_cut_is_reported() -> None:
    async with fake_gateway(reply_ms=2000) as (address, gw):
        report = await place_call(
            CallOptions(
                gateway=address,
                utterances=[
                    Utterance(pcm=tone_pcm(300, 16000)),
                    Utterance(pcm=tone_pcm(300, 16000), barge_in_after_ms=400),
                ],
                pause_ms=200,
            )
        )
    assert report.ok, (report.error, report.notes)
    heard = gw.calls[0]
    # Utterance 2 started about 400 ms into reply 1, while the agent was still talking.
    reply1_start = heard.speech_starts[0] + 0.2  # the fake answers after 200 ms of silence
    started_after = heard.speech_starts[1] - reply1_start - 0.3  # utterance 1 itself lasted 300 ms
    assert 0.3 <= started_after <= 0.7, started_after
    assert report.clears == 1
    assert report.turns[0].interrupted and not report.turns[1].interrupted
    agent_lines = [t for t in report.transcript if t.speaker == "agent"]
    assert [(t.text, t.interrupted) for t in agent_lines] == [
        ("Hello.", False),
        ("reply 1.", True),
        ("reply 2.", False),
    ]


async def test_phone_audio_goes_as_mulaw_8khz_frames() -> None:
    async with fake_gateway() as (address, gw):
        report = await place_call(
            CallOptions(
                gateway=address,
                encoding="mulaw",
                rate=8000,
                utterances=[Utterance(pcm=tone_pcm(300, 8000))],
                pause_ms=200,
            )
        )
    assert report.ok, report.error
    assert {n for _, n in gw.calls[0].frames} == {160}  # 20 ms of 8-bit mu-law
    assert report.rate == 8000
    # Agent mu-law decoded back to PCM16: the tone survives (mu-law is lossy, but not by much).
    agent = np.frombuffer(report.agent_audio, dtype="<i2")
    expected = np.frombuffer(tone_pcm(300, 8000) + tone_pcm(600, 8000), dtype="<i2")
    assert len(agent) == len(expected)
    assert np.abs(agent.astype(np.int32) - expected).max() < 400


async def test_a_call_the_gateway_refuses_reports_the_status() -> None:
    async with fake_gateway() as (address, _gw):
        report = await place_call(
            CallOptions(gateway=address, agent="nope", utterances=[Utterance(pcm=tone_pcm(200, 16000))])
        )
    assert not report.ok
    assert report.error == "NOT_FOUND: no agent 'nope' for this tenant"
    assert report.status == "NOT_FOUND" and report.call_id == ""


async def test_an_unreachable_gateway_fails_fast_with_unavailable() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once the socket closes
    started = time.monotonic()
    report = await place_call(CallOptions(gateway=f"127.0.0.1:{port}", utterances=[]))
    assert report.error.startswith("UNAVAILABLE"), report.error
    assert report.status == "UNAVAILABLE"
    assert time.monotonic() - started < 10


async def test_a_call_the_gateway_ends_stops_the_caller_at_once() -> None:
    async with fake_gateway(end_after_turn=1) as (address, gw):
        started = time.monotonic()
        report = await place_call(
            CallOptions(
                gateway=address,
                utterances=[Utterance(pcm=tone_pcm(300, 16000)), Utterance(pcm=tone_pcm(3000, 16000))],
                pause_ms=200,
            )
        )
    assert report.end_reason == "END_REASON_SERVICE_ERROR" and report.end_message == "tts_svc went away"
    assert not report.ok and report.error == "" and report.status == "OK"
    assert len(gw.calls[0].speech_starts) == 1  # utterance 2 was never spoken
    assert time.monotonic() - started < 3.5


async def test_an_error_ending_stops_the_caller_and_reports_the_status() -> None:
    async with fake_gateway(fail_after_turn=1) as (address, gw):
        report = await place_call(
            CallOptions(
                gateway=address,
                utterances=[Utterance(pcm=tone_pcm(300, 16000)), Utterance(pcm=tone_pcm(300, 16000))],
                pause_ms=200,
            )
        )
    assert not report.ok
    assert report.status == "INVALID_ARGUMENT"
    assert report.error == "INVALID_ARGUMENT: bad caller audio"
    assert report.end_reason == "END_REASON_INVALID_INPUT"
    heard = gw.calls[0]
    # The caller stopped writing once call_ended arrived and half-closed (no hangup message),
    # which is what lets the gateway send its status without a write racing it.
    assert heard.half_closed and not heard.hung_up
    # A frame or two already in flight when call_ended left may still arrive (a loaded machine
    # delays both); a caller that kept talking would send 50 frames a second.
    late = [t for t, _ in heard.frames if t > heard.ended_at + 0.1]
    assert len(late) <= 2, f"{len(late)} frames after call_ended"
    assert len(heard.speech_starts) == 1  # utterance 2 was never spoken


async def test_the_voiceai_command_speaks_a_wav_and_writes_the_agent(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VOICEAI_API_KEY", "vai_test_key")
    caller = write_pcm16(tmp_path / "caller.wav", tone_pcm(400, 44100), 44100)
    out = tmp_path / "agent.wav"
    async with fake_gateway() as (address, gw):
        argv = [
            "call",
            "--gateway",
            address,
            "--wav",
            str(caller),
            "--pause-ms",
            "200",
            "--out",
            str(out),
            "--json",
        ]
        code = await asyncio.get_running_loop().run_in_executor(None, main, argv)
        assert gw.calls[0].authorization == "ApiKey vai_test_key"
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["ok"] and [t["text"] for t in summary["transcript"]] == [
        "Hello.",
        "utterance 1",
        "reply 1.",
    ]
    assert len(read_pcm16(out, 16000)) == len(tone_pcm(300, 16000)) + len(tone_pcm(600, 16000))
