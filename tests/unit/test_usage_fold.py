"""The gateway's usage fold: service reports summed per turn/provider/model/key/unit."""

from __future__ import annotations

from common.gen.voiceai.common.v1 import usage_pb2
from common.pricing import line
from gateway.usage_fold import UNATTRIBUTED, UsageFold


def test_tts_pieces_bill_the_provider_that_spoke_them_and_continuations_follow() -> None:
    fold = UsageFold()
    fold.tts_chunk(1, "Hello there.", "deepgram", "aura-2", 0.5)
    fold.tts_chunk(1, "", "", "", 0.25)  # continuation of the Aura-2 piece
    fold.tts_chunk(1, "How can I help?", "elevenlabs", "", 0.75)  # fallback took over
    fold.tts_chunk(2, "Bye.", "", "", 0.1)  # an older tts_svc: no provider
    got = {(ln.turn, ln.provider, ln.unit): ln.quantity_milli for ln in fold.lines()}
    assert got == {
        (1, "deepgram", "character"): 12_000,
        (1, "deepgram", "second"): 750,
        (1, "elevenlabs", "character"): 15_000,
        (1, "elevenlabs", "second"): 750,
        (2, UNATTRIBUTED, "character"): 4_000,
        (2, UNATTRIBUTED, "second"): 100,
    }


def test_llm_and_stt_reports_are_summed_and_zero_lines_dropped() -> None:
    fold = UsageFold()
    report = usage_pb2.Usage(
        lines=[line("llm", "openai", "input_token", 5_000, model="m", key_label="tenant")]
    )
    fold.llm(1, report)
    fold.llm(1, report)
    fold.llm(2, usage_pb2.Usage(lines=[line("llm", "openai", "output_token", 0, model="m")]))
    fold.stt(usage_pb2.Usage(lines=[line("stt", "deepgram", "second", 1_500, model="nova-3", turn=7)]))
    lines = fold.lines()
    assert [(ln.turn, ln.component, ln.key_label, ln.quantity_milli) for ln in lines] == [
        (0, "stt", "", 1_500),  # call-level (turn 0), whatever the report said
        (1, "llm", "tenant", 10_000),
    ]
