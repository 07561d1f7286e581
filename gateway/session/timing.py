"""Turn timing: every turn is measured at the same points, relative to the caller's speech end.

Stages: stt_final, end_of_turn, llm_first_token, tts_first_audio, first_audio_out. Each is
recorded once per turn, exported as a Prometheus histogram per stage, sent to the client as
a turn-metrics event and logged with the tenant and call ids.
"""

from __future__ import annotations

import logging
import time

from prometheus_client import Counter, Histogram

from gateway.session.events import TurnTimings

log = logging.getLogger(__name__)

STAGES = ("stt_final", "end_of_turn", "llm_first_token", "tts_first_audio", "first_audio_out")

TURN_STAGE_MS = Histogram(
    "voiceai_gateway_turn_stage_ms",
    "Milliseconds from the caller's speech end to each stage of an agent turn",
    ["stage"],
    buckets=(25, 50, 100, 200, 300, 400, 500, 600, 800, 1000, 1250, 1500, 2000, 3000, 5000, 10000),
)
TURNS = Counter("voiceai_gateway_turns_total", "Agent turns", ["outcome"])
FILLERS = Counter("voiceai_gateway_fillers_total", "Filler phrases spoken because a turn was slow")
INTERRUPTIONS = Counter(
    "voiceai_gateway_interruptions_total", "Caller barge-ins", ["kind"]
)  # kind: confirmed | false | backchannel


class TurnTimer:
    """Records the stages of one turn; ``speech_end`` is a monotonic timestamp."""

    __slots__ = ("speech_end", "timings")

    def __init__(self, turn: int, speech_end: float) -> None:
        self.speech_end = speech_end
        self.timings = TurnTimings(turn=turn)

    def mark(self, stage: str, at: float | None = None) -> None:
        attr = f"{stage}_ms"
        if getattr(self.timings, attr) is None:
            at = time.monotonic() if at is None else at
            setattr(self.timings, attr, max(0.0, (at - self.speech_end) * 1000.0))

    def has(self, stage: str) -> bool:
        return getattr(self.timings, f"{stage}_ms") is not None

    def finish(self) -> TurnTimings:
        t = self.timings
        for stage in STAGES:
            value = getattr(t, f"{stage}_ms")
            if value is not None:
                TURN_STAGE_MS.labels(stage).observe(value)
        TURNS.labels("interrupted" if t.interrupted else "completed").inc()
        if not log.isEnabledFor(logging.INFO):  # the arguments below are built eagerly
            return t
        log.info(
            "turn %d: %s%s%s",
            t.turn,
            " ".join(
                f"{s}={getattr(t, f'{s}_ms'):.0f}ms" if getattr(t, f"{s}_ms") is not None else f"{s}=-"
                for s in STAGES
            ),
            " interrupted" if t.interrupted else "",
            " filler" if t.filler_spoken else "",
        )
        return t
