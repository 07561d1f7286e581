"""What happened on one call, as the caller saw it, and how ``voiceai call`` prints it."""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field
from typing import Any

from common.gen.voiceai.gateway.v1 import gateway_pb2

STAGES = ("stt_final_ms", "end_of_turn_ms", "llm_first_token_ms", "tts_first_audio_ms", "first_audio_out_ms")
HANGUP = "END_REASON_CALLER_HANGUP"


@dataclass
class TranscriptEntry:
    """One line of the conversation: a caller's turn, or what the agent said in one turn."""

    at_s: float  # seconds since the call was placed
    speaker: str  # "caller" | "agent"
    text: str
    turn: int
    interrupted: bool = False  # the caller barged in: the agent stopped somewhere in this text


@dataclass
class TurnTiming:
    """One turn's latencies in ms after the caller stopped speaking; None = the stage did not happen."""

    turn: int
    stt_final_ms: int | None
    end_of_turn_ms: int | None
    llm_first_token_ms: int | None
    tts_first_audio_ms: int | None
    first_audio_out_ms: int | None
    interrupted: bool
    filler_spoken: bool

    @classmethod
    def from_proto(cls, m: gateway_pb2.TurnMetrics) -> TurnTiming:
        def ms(v: int) -> int | None:
            return None if v < 0 else int(v)  # the wire says -1 for "did not happen"

        return cls(
            m.turn,
            ms(m.stt_final_ms),
            ms(m.end_of_turn_ms),
            ms(m.llm_first_token_ms),
            ms(m.tts_first_audio_ms),
            ms(m.first_audio_out_ms),
            m.interrupted,
            m.filler_spoken,
        )


@dataclass
class CallReport:
    """Everything the caller saw of one call: words, timings, outcome and audio."""

    call_id: str = ""
    agent_id: str = ""
    transcript: list[TranscriptEntry] = field(default_factory=list)
    turns: list[TurnTiming] = field(default_factory=list)
    clears: int = 0  # barge-ins the gateway acted on
    end_reason: str = ""  # EndReason name from call_ended, e.g. END_REASON_CALLER_HANGUP
    end_message: str = ""
    usage: dict[str, float] = field(default_factory=dict)
    cost: str = ""  # issue 17: the call's usage priced at the price book's list prices
    status: str = ""  # the gRPC status code the call ended with ("OK"); "" if it never arrived
    error: str = ""  # "CODE: details" of a failed call, or what went wrong on the caller's side
    notes: list[str] = field(default_factory=list)  # waits that timed out; the call went on
    rate: int = 16000
    agent_audio: bytes = b""  # PCM16 mono at ``rate``: everything the agent played
    caller_chunks: list[tuple[float, bytes]] = field(default_factory=list)  # (s, PCM16) speech sent
    agent_chunks: list[tuple[float, bytes]] = field(default_factory=list)  # (s, PCM16) audio received

    @property
    def ok(self) -> bool:
        return not self.error and self.end_reason == HANGUP

    def summary(self) -> dict[str, Any]:
        """Everything but the audio, for ``--json``."""
        out = asdict(self)
        for key in ("agent_audio", "caller_chunks", "agent_chunks"):
            out.pop(key)
        out["ok"] = self.ok
        out["agent_audio_s"] = round(len(self.agent_audio) / 2 / self.rate, 2)
        return out


def _cell(v: int | None, width: int) -> str:
    return f"{'-' if v is None else v:>{width}}"


def _latency_table(turns: list[TurnTiming]) -> list[str]:
    names = ["turn", *(s.removesuffix("_ms") for s in STAGES), "interrupted"]
    widths = [max(4, len(n)) for n in names]
    lines = ["", "  latency per turn, ms after the caller stopped speaking:"]
    lines.append("  " + "  ".join(f"{n:>{w}}" for n, w in zip(names, widths, strict=True)))
    for row in turns:
        cells = [_cell(row.turn, widths[0])]
        cells += [_cell(getattr(row, s), w) for s, w in zip(STAGES, widths[1:-1], strict=True)]
        cells.append(f"{'yes' if row.interrupted else 'no':>{widths[-1]}}")
        lines.append("  " + "  ".join(cells) + ("  (filler spoken)" if row.filler_spoken else ""))
    answered = [t.first_audio_out_ms for t in turns if t.first_audio_out_ms is not None]
    if len(answered) > 1:
        lines.append(f"  median first_audio_out: {statistics.median(answered):.0f} ms")
    return lines


def format_report(report: CallReport) -> str:
    """The conversation, the per-turn latency table and how the call ended, for a terminal."""
    lines = [f"call {report.call_id or '(not started)'}  agent {report.agent_id}", ""]
    for t in report.transcript:
        cut = "  [interrupted]" if t.interrupted else ""
        lines.append(f"  {t.at_s:6.2f}s  {t.speaker:>6}: {t.text}{cut}")
    if report.turns:
        lines += _latency_table(report.turns)
    lines.append("")
    lines += [f"  note: {note}" for note in report.notes]
    reason = report.end_reason.removeprefix("END_REASON_")
    if report.error:
        lines.append(f"  call failed: {report.error}")
        if reason:
            lines.append(f"  the gateway ended the call: {reason}")
    elif reason:
        lines.append(f"  ended: {reason} ({report.end_message}); barge-ins: {report.clears}")
    if report.usage:
        u = report.usage
        lines.append(
            f"  usage: stt {u['stt_seconds']:.1f} s, llm {u['llm_prompt_tokens']:.0f} prompt +"
            f" {u['llm_completion_tokens']:.0f} completion tokens, tts {u['tts_characters']:.0f} chars"
            f" / {u['tts_seconds']:.1f} s"
        )
    if report.cost:
        lines.append(f"  cost: {report.cost}")
    return "\n".join(lines)
