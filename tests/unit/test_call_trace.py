"""The call's span tree built from the turn timings the call already records (no mesh)."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from common import telemetry
from gateway import call_trace
from gateway.call_trace import STAGES, CallTrace, room_attributes
from gateway.session.events import TurnTimings


@pytest.fixture
def exporter(monkeypatch: pytest.MonkeyPatch) -> InMemorySpanExporter:
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    monkeypatch.setattr(telemetry._state, "provider", provider)
    return memory


def test_off_means_no_trace_and_hooks_do_nothing() -> None:
    assert CallTrace.begin(tenant_id="t", call_id="c", agent_id="a", ingress="converse") is None
    call_trace.turn_finished(TurnTimings(turn=1, first_audio_out_ms=5.0))  # no call: nothing happens


async def test_a_turns_stages_follow_one_another_and_add_up_to_its_latency(
    exporter: InMemorySpanExporter,
) -> None:
    async def call() -> None:
        ingress, ids = room_attributes(
            "room-1", True, {"sip.callID": "SCL_1", "sip.trunkID": "ST_2", "sip.phoneNumber": "+1555"}
        )
        trace = CallTrace.begin(tenant_id="t1", call_id="c1", agent_id="a1", ingress=ingress, attributes=ids)
        assert trace is not None

        async def reply(turn: int) -> None:  # the reply task of a turn, as the session runs it
            call_trace.turn_started(turn, time.monotonic() - 0.8)
            timings = TurnTimings(
                turn, 300.0, 500.0, 610.0, 660.0, 662.5, interrupted=turn == 2, filler_spoken=turn == 2
            )
            call_trace.turn_finished(timings)

        await asyncio.get_running_loop().create_task(reply(1))
        await asyncio.get_running_loop().create_task(reply(2))
        trace.end("caller_hangup", turns=2)

    await asyncio.get_running_loop().create_task(call())
    spans = {s.name: s for s in exporter.get_finished_spans() if s.name != "gateway.turn"}
    root = spans["gateway.call"]
    assert (
        dict(root.attributes or {}).items()
        >= {
            "voiceai.ingress": "sip",
            "voiceai.sip.call_id": "SCL_1",
            "voiceai.sip.trunk_id": "ST_2",
            "voiceai.livekit.room": "room-1",
            "voiceai.tenant_id": "t1",
        }.items()
    )
    assert not any("+1555" in str(v) for v in (root.attributes or {}).values())
    turns = [s for s in exporter.get_finished_spans() if s.name == "gateway.turn"]
    assert [t.parent.span_id for t in turns if t.parent] == [root.context.span_id] * 2
    first = turns[0]
    stages = sorted(
        (s for s in exporter.get_finished_spans() if s.parent and s.parent.span_id == first.context.span_id),
        key=lambda s: s.start_time or 0,
    )
    assert [s.name for s in stages] == [name for _stage, name in STAGES]
    assert stages[0].start_time == first.start_time
    for before, after in zip(stages, stages[1:], strict=False):
        assert before.end_time == after.start_time
    total_ms = sum((s.end_time or 0) - (s.start_time or 0) for s in stages) / 1e6
    assert abs(total_ms - 662.5) < 0.01
    assert [e.name for e in turns[1].events] == ["voiceai.filler", "voiceai.barge_in"]


async def test_a_failed_turn_marks_its_span_and_the_call(exporter: InMemorySpanExporter) -> None:
    async def call() -> None:
        trace = CallTrace.begin(tenant_id="t1", call_id="c2", agent_id="", ingress="converse")
        assert trace is not None

        async def reply() -> None:
            call_trace.turn_started(1, time.monotonic())
            call_trace.turn_failed(1, "llm: internal error")
            call_trace.turn_finished(TurnTimings(1, 300.0, 500.0))

        await asyncio.get_running_loop().create_task(reply())
        trace.end("caller_hangup", turns=1)

    await asyncio.get_running_loop().create_task(call())
    by_name = {s.name: s for s in exporter.get_finished_spans()}
    assert by_name["gateway.turn"].status.status_code.name == "ERROR"
    assert [e.name for e in by_name["gateway.turn"].events] == ["voiceai.apology"]
    assert by_name["gateway.call"].status.status_code.name == "ERROR"
    assert by_name["gateway.call"].attributes["voiceai.agent_id"] == "inline"  # type: ignore[index]


async def test_client_spans_name_the_traceparent_sent_and_an_rpc_error_but_not_a_cancel(
    exporter: InMemorySpanExporter,
) -> None:
    class Failed(Exception):
        def code(self) -> grpc.StatusCode:
            return grpc.StatusCode.UNAVAILABLE

    async def call() -> None:
        assert call_trace.client_span("llm.StreamChat", "127.0.0.1:1") is None  # not a traced call
        trace = CallTrace.begin(tenant_id="t1", call_id="c3", agent_id="a", ingress="converse")
        assert trace is not None
        failed = call_trace.client_span("llm.StreamChat", "10.0.0.7:50062")
        md = call_trace.with_traceparent((("x-tenant-id", "t1"), ("traceparent", "00-old-old-01")), failed)
        ids = failed.get_span_context()
        assert md == (
            ("x-tenant-id", "t1"),
            ("traceparent", f"00-{ids.trace_id:032x}-{ids.span_id:016x}-{int(ids.trace_flags):02x}"),
        )
        call_trace.end_client(failed, Failed())
        call_trace.end_client(
            call_trace.client_span("tts.StreamingSynthesize", "10.0.0.8:50063"), asyncio.CancelledError()
        )
        trace.end("caller_hangup")

    await asyncio.get_running_loop().create_task(call())
    by_name = {s.name: s for s in exporter.get_finished_spans()}
    llm, tts = by_name["llm.StreamChat"], by_name["tts.StreamingSynthesize"]
    assert llm.status.status_code.name == "ERROR" and llm.attributes["rpc.grpc.status_code"] == "UNAVAILABLE"  # type: ignore[index]
    assert llm.attributes["server.address"] == "10.0.0.7" and llm.attributes["server.port"] == 50062  # type: ignore[index]
    assert tts.status.status_code.name == "UNSET"
    assert llm.parent is not None and llm.parent.span_id == by_name["gateway.call"].context.span_id
