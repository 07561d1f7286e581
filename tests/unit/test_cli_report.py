"""What ``voiceai call`` prints: the conversation, the latency table, the outcome, and --json."""

from __future__ import annotations

import json
import re

from common.gen.voiceai.common.v1 import usage_pb2
from common.gen.voiceai.gateway.v1 import gateway_pb2
from common.pricing import line
from gateway.cli import CallReport, TranscriptEntry, TurnTiming, format_report
from gateway.cli.cost import estimate_cost


def sample_report() -> CallReport:
    return CallReport(
        call_id="c0ffee",
        agent_id="demo",
        transcript=[
            TranscriptEntry(0.5, "agent", "Hello, thanks for calling.", 0),
            TranscriptEntry(4.2, "caller", "Book a cleaning please.", 1),
            TranscriptEntry(4.9, "agent", "Sure, I can help with that.", 1, interrupted=True),
            TranscriptEntry(6.0, "caller", "What are your hours?", 2),
        ],
        turns=[
            TurnTiming(1, 610, 612, 615, 700, 701, True, False),
            TurnTiming(2, 580, 581, None, None, 3050, False, True),
        ],
        clears=1,
        end_reason="END_REASON_CALLER_HANGUP",
        end_message="the caller hung up",
        status="OK",
        usage={
            "stt_seconds": 9.5,
            "llm_prompt_tokens": 40,
            "llm_completion_tokens": 12,
            "tts_characters": 80,
            "tts_seconds": 3.25,
        },
        agent_audio=b"\x00\x00" * 16000,
        caller_chunks=[(0.0, b"\x00\x00")],
    )


def test_the_conversation_is_printed_in_order_with_the_barge_in_marked() -> None:
    text = format_report(sample_report())
    order = [text.index(s) for s in ("Hello, thanks", "Book a cleaning", "Sure, I can", "What are your")]
    assert order == sorted(order)
    assert "Sure, I can help with that.  [interrupted]" in text
    assert "Hello, thanks for calling.  [interrupted]" not in text


def test_the_latency_table_has_one_row_per_turn_and_dashes_for_missing_stages() -> None:
    lines = format_report(sample_report()).splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:1] == ["turn"])
    assert lines[header].split() == [
        "turn",
        "stt_final",
        "end_of_turn",
        "llm_first_token",
        "tts_first_audio",
        "first_audio_out",
        "interrupted",
    ]
    assert lines[header + 1].split() == ["1", "610", "612", "615", "700", "701", "yes"]
    assert lines[header + 2].split() == ["2", "580", "581", "-", "-", "3050", "no", "(filler", "spoken)"]
    # Every number ends where its column header ends (right-aligned columns).
    ends = [m.end() for m in re.finditer(r"\S+", lines[header])]
    for row in lines[header + 1 : header + 3]:
        assert [m.end() for m in re.finditer(r"\S+", row)][:7] == ends


def test_the_outcome_and_usage_close_the_report() -> None:
    text = format_report(sample_report())
    assert "ended: CALLER_HANGUP (the caller hung up); barge-ins: 1" in text
    assert "usage: stt 9.5 s, llm 40 prompt + 12 completion tokens, tts 80 chars / 3.2 s" in text
    assert "call failed" not in text


def test_a_failed_call_says_why() -> None:
    report = CallReport(
        agent_id="nope", status="NOT_FOUND", error="NOT_FOUND: no agent 'nope' for tenant 'demo'"
    )
    report.notes.append("utterance 1 was not transcribed (waited 30 s)")
    text = format_report(report)
    assert "call failed: NOT_FOUND: no agent 'nope' for tenant 'demo'" in text
    assert "note: utterance 1 was not transcribed" in text
    assert "latency" not in text  # no turns, no table
    assert not report.ok


def test_a_call_the_gateway_ended_with_an_error_shows_status_and_reason() -> None:
    report = CallReport(
        call_id="c1",
        status="INVALID_ARGUMENT",
        error="INVALID_ARGUMENT: dtmf must be digits 0-9, '*', '#' or 'A'-'D'",
        end_reason="END_REASON_INVALID_INPUT",
        end_message="dtmf must be digits 0-9, '*', '#' or 'A'-'D'",
    )
    lines = format_report(report).splitlines()
    assert "  call failed: INVALID_ARGUMENT: dtmf must be digits 0-9, '*', '#' or 'A'-'D'" in lines
    assert "  the gateway ended the call: INVALID_INPUT" in lines
    assert not any(line.startswith("  ended:") for line in lines)
    assert not report.ok


def test_only_a_clean_hangup_is_ok() -> None:
    assert sample_report().ok
    for reason in ("END_REASON_SERVICE_ERROR", "END_REASON_SHUTDOWN", ""):
        assert not CallReport(end_reason=reason).ok
    assert not CallReport(end_reason="END_REASON_CALLER_HANGUP", error="UNAVAILABLE: gone").ok


def test_json_summary_has_everything_but_the_audio() -> None:
    summary = json.loads(json.dumps(sample_report().summary()))
    assert summary["ok"] is True
    assert summary["agent_audio_s"] == 1.0
    assert "agent_audio" not in summary and "caller_chunks" not in summary
    assert summary["transcript"][2] == {
        "at_s": 4.9,
        "speaker": "agent",
        "text": "Sure, I can help with that.",
        "turn": 1,
        "interrupted": True,
    }
    assert summary["turns"][1]["llm_first_token_ms"] is None
    assert summary["end_reason"] == "END_REASON_CALLER_HANGUP" and summary["status"] == "OK"


def test_turn_timing_from_the_wire() -> None:
    m = gateway_pb2.TurnMetrics(
        turn=3,
        stt_final_ms=500,
        end_of_turn_ms=501,
        llm_first_token_ms=-1,
        tts_first_audio_ms=-1,
        first_audio_out_ms=3000,
        interrupted=False,
        filler_spoken=True,
    )
    t = TurnTiming.from_proto(m)
    assert (t.turn, t.stt_final_ms, t.llm_first_token_ms, t.first_audio_out_ms) == (3, 500, None, 3000)
    assert t.filler_spoken and not t.interrupted


def test_the_calls_cost_is_shown_from_its_usage_lines() -> None:
    usage = usage_pb2.Usage(
        lines=[
            line("stt", "deepgram", "second", 60_000, model="nova-3"),
            line("tts", "piper", "character", 80_000),
            line("llm", "openai", "input_token", 1_000, model="gpt-unknown"),
        ]
    )
    cost = estimate_cost(usage)
    assert cost.startswith("at least $0.0077 ("), cost
    assert (
        "stt deepgram $0.0077" in cost
        and "tts piper $0.0000" in cost
        and "llm openai $0.0000 + unpriced" in cost
    )
    assert estimate_cost(usage_pb2.Usage()) == ""
    report = CallReport(end_reason="END_REASON_CALLER_HANGUP", cost=cost)
    assert f"cost: {cost}" in format_report(report)
