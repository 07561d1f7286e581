"""One call, one trace, across the real mesh processes (``python -m gateway.mesh``, zero-cost
engines): every process writes its spans to its own file (``VOICEAI_TRACE_FILE``), read back here.

The trace of a call has spans from the gateway, stt, llm, tts and tenant_svc under one trace id;
each turn's stage spans follow one another and add up to the turn's latency; a barge-in shows on
its turn; a call whose turn failed is kept even when the sampling ratio keeps nothing else.
"""

from __future__ import annotations

import json
import signal
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gateway import trace_view
from gateway.call_trace import STAGES
from gateway.cli import CallOptions, Utterance, place_call
from tests.credentials import bearer
from tests.integration.test_cli_mesh import launcher, read_until

pytestmark = pytest.mark.slow  # five Python processes and real-time audio

TONE = (6000 * np.sin(2 * np.pi * 300 * np.arange(8000) / 16000)).astype("<i2").tobytes()
# The barge-in: a second of speech from 100 ms into the agent's ~1 s reply, so playout pauses
# (min_interruption_ms) while the agent is still speaking, however late the final comes.
LONG_TONE = TONE * 2


def _ns(stamp: str) -> int:
    moment = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    return int(moment.timestamp()) * 1_000_000_000 + moment.microsecond * 1000


def _spans(trace_dir: Path) -> dict[str, list[dict[str, Any]]]:
    """Spans per service file (gateway, stt, llm, tts, tenant)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(trace_dir.glob("*.jsonl")):
        out[path.stem] = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return out


async def _mesh_call(
    tmp_path: Path, utterances: list[Utterance], env: dict[str, str]
) -> dict[str, list[dict[str, Any]]]:
    trace_dir = tmp_path / "traces"
    env = {"VOICEAI_TRACE_FILE": str(trace_dir / "{service}.jsonl"), **env}
    with launcher(env=env) as (proc, (gw, *_rest)):
        read_until(proc, "Ctrl-C stops the mesh")
        report = await place_call(
            CallOptions(
                gateway=f"127.0.0.1:{gw}",
                utterances=utterances,
                pause_ms=200,
                authorization=bearer("demo")[1],
            )
        )
        assert report.ok, (report.error, report.notes)
        proc.send_signal(signal.SIGINT)  # the services flush their spans as they exit
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, out
    return _spans(trace_dir)


async def test_a_call_is_one_trace_across_the_mesh_with_its_turns_stages_and_barge_in(tmp_path: Path) -> None:
    spans = await _mesh_call(
        tmp_path,
        [Utterance(pcm=TONE), Utterance(pcm=LONG_TONE, barge_in_after_ms=100)],
        {"OTEL_TRACES_SAMPLER_ARG": "1"},
    )
    calls = [s for s in spans["gateway"] if s["name"] == "gateway.call"]
    assert len(calls) == 1
    call = calls[0]
    trace_id = call["context"]["trace_id"]
    assert call["attributes"]["voiceai.ingress"] == "converse"
    assert call["attributes"]["voiceai.tenant_id"] == "demo" and call["attributes"]["voiceai.call_id"]
    for service in ("gateway", "stt", "llm", "tts", "tenant"):
        assert any(s["context"]["trace_id"] == trace_id for s in spans.get(service, [])), service
    # The services' server spans hang under the call (its turn, for llm and tts).
    mine = {s["context"]["span_id"]: s for s in spans["gateway"] if s["context"]["trace_id"] == trace_id}
    llm = [s for s in spans["llm"] if s["context"]["trace_id"] == trace_id]
    assert llm and all(mine[s["parent_id"]]["name"] == "llm.StreamChat" for s in llm)
    # ... under the gateway's client span for the stream, which is the turn's child.
    clients = [mine[s["parent_id"]] for s in llm]
    assert all(
        c["kind"] == "SpanKind.CLIENT" and mine[c["parent_id"]]["name"] == "gateway.turn" for c in clients
    )
    stt = [s for s in spans["stt"] if s["context"]["trace_id"] == trace_id]
    assert [mine[s["parent_id"]]["name"] for s in stt] == ["stt.StreamingRecognize"]
    assert all(s["attributes"]["voiceai.llm.completion_tokens"] == 5 for s in llm)

    turns = sorted(
        (s for s in mine.values() if s["name"] == "gateway.turn"),
        key=lambda s: s["attributes"]["voiceai.turn"],
    )
    assert len(turns) == 2
    for turn in turns:
        stages = sorted(
            (
                s
                for s in mine.values()
                if s["parent_id"] == turn["context"]["span_id"]
                and s["name"].startswith("gateway.")
                and s["name"] != "gateway.turn"
            ),
            key=lambda s: _ns(s["start_time"]),
        )
        names = [s["name"] for s in stages]
        assert names == [name for _stage, name in STAGES][: len(names)], names
        if not turn["attributes"]["voiceai.interrupted"]:
            assert names[-1] == "gateway.first_audio_out"
            latency_ms = turn["attributes"]["voiceai.first_audio_out_ms"]
            total_ms = sum(_ns(s["end_time"]) - _ns(s["start_time"]) for s in stages) / 1e6
            assert abs(total_ms - latency_ms) < 3.0, (total_ms, latency_ms)
            # The stages start at the caller's speech end, where the turn span starts.
            assert abs(_ns(stages[0]["start_time"]) - _ns(turn["start_time"])) < 2_000_000
    interrupted = [t for t in turns if t["attributes"]["voiceai.interrupted"]]
    assert interrupted and any(e["name"] == "voiceai.barge_in" for e in interrupted[0]["events"])

    # What a person reads: the call's tree, turns under the call, the llm stream under its turn.
    lines = trace_view.render(trace_view.load(tmp_path / "traces")[trace_id])
    depth = {
        name: next(len(t) - len(t.lstrip()) for t in (x.split("ms  ", 2)[2] for x in lines) if name in t)
        for name in ("gateway.call", "gateway.turn", "llm: /voiceai.llm")
    }
    assert depth["gateway.call"] < depth["gateway.turn"] < depth["llm: /voiceai.llm"]
    assert sum("gateway.turn" in line for line in lines) == 2 and any("[barge_in]" in line for line in lines)


async def test_a_call_with_a_failed_turn_is_kept_at_a_zero_sampling_ratio(tmp_path: Path) -> None:
    env = {"OTEL_TRACES_SAMPLER_ARG": "0", "VOICEAI_FAKE_LLM_FAIL_TURN": "2"}
    spans = await _mesh_call(tmp_path, [Utterance(pcm=TONE)], env)  # nothing fails: dropped
    assert not [s for s in spans.get("gateway", []) if s["name"] == "gateway.call"]

    spans = await _mesh_call(tmp_path / "second", [Utterance(pcm=TONE), Utterance(pcm=TONE)], env)
    calls = [s for s in spans["gateway"] if s["name"] == "gateway.call"]
    assert len(calls) == 1 and calls[0]["status"]["status_code"] == "ERROR"
    failed = [
        s for s in spans["gateway"] if s["name"] == "gateway.turn" and s["status"]["status_code"] == "ERROR"
    ]
    assert [t["attributes"]["voiceai.turn"] for t in failed] == [2]
    assert any(e["name"] == "voiceai.apology" for e in failed[0]["events"])
    # The llm stream that failed is kept by llm_svc too, in the same trace.
    assert any(
        s["context"]["trace_id"] == calls[0]["context"]["trace_id"] and s["status"]["status_code"] == "ERROR"
        for s in spans["llm"]
    )
