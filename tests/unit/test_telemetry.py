"""Tracing set-up: off unless asked, and the tail decision that keeps sampled and errored calls."""

from __future__ import annotations

import io
import json
import logging

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import TraceIdRatioBased
from opentelemetry.trace import Status, StatusCode

from common import context, logs, telemetry
from common.telemetry import TailKeep, TelemetrySettings, _DetachNoise


def test_off_unless_the_environment_asks() -> None:
    assert TelemetrySettings().exporters_wanted() == []
    assert (
        TelemetrySettings(
            otel_traces_exporter="none", otel_exporter_otlp_endpoint="http://x:4317"
        ).exporters_wanted()
        == []
    )
    assert TelemetrySettings(otel_exporter_otlp_endpoint="http://x:4317").exporters_wanted() == ["otlp"]
    assert TelemetrySettings(otel_traces_exporter="otlp,console").exporters_wanted() == ["otlp", "console"]
    assert TelemetrySettings(voiceai_trace_file="/tmp/t.jsonl").exporters_wanted() == ["file"]
    assert TelemetrySettings(otel_sdk_disabled=True, otel_traces_exporter="otlp").exporters_wanted() == []


def _calls(ratio: float, n: int, fail_every: int) -> tuple[InMemorySpanExporter, list[tuple[int, bool]]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(TailKeep(SimpleSpanProcessor(exporter), ratio))
    tracer = provider.get_tracer("test")
    calls = []
    for i in range(n):
        with tracer.start_as_current_span("gateway.call") as root:
            with tracer.start_as_current_span("gateway.turn") as turn:
                failed = i % fail_every == 0
                if failed:
                    turn.set_status(Status(StatusCode.ERROR, "the turn failed"))
            calls.append((root.get_span_context().trace_id, failed))
    return exporter, calls


def test_errored_calls_are_kept_whole_at_a_low_ratio_and_others_by_trace_id() -> None:
    exporter, calls = _calls(ratio=0.1, n=200, fail_every=10)
    kept = {s.context.trace_id for s in exporter.get_finished_spans()}
    bound = TraceIdRatioBased.get_bound_for_rate(0.1)
    for trace_id, failed in calls:
        by_ratio = (trace_id & 0xFFFFFFFFFFFFFFFF) < bound
        assert (trace_id in kept) == (failed or by_ratio)
    # Whole calls: a kept trace has both its spans, a dropped one none.
    per_trace: dict[int, int] = {}
    for span in exporter.get_finished_spans():
        per_trace[span.context.trace_id] = per_trace.get(span.context.trace_id, 0) + 1
    assert set(per_trace.values()) == {2}
    assert 20 <= len(kept) < 100  # 20 failed + about 10 % of the other 180


def test_all_calls_kept_at_ratio_one_and_none_without_errors_at_zero() -> None:
    exporter, calls = _calls(ratio=1.0, n=20, fail_every=1000)
    assert len({s.context.trace_id for s in exporter.get_finished_spans()}) == 20
    exporter, calls = _calls(ratio=0.0, n=20, fail_every=1000)
    assert len(exporter.get_finished_spans()) == 2  # only call 0, which failed
    assert exporter.get_finished_spans()[0].context.trace_id == calls[0][0]


def test_a_span_ending_after_its_local_root_follows_the_decision() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(TailKeep(SimpleSpanProcessor(exporter), 1.0))
    tracer = provider.get_tracer("test")
    root = tracer.start_span("gateway.call")
    late = tracer.start_span("gateway.cleanup", context=trace.set_span_in_context(root))
    root.end()
    late.end()
    assert [s.name for s in exporter.get_finished_spans()] == ["gateway.call", "gateway.cleanup"]


def test_only_the_detach_noise_of_abandoned_stream_handlers_is_dropped() -> None:
    noise = _DetachNoise()

    def record(msg: str) -> logging.LogRecord:
        return logging.LogRecord("opentelemetry.context", logging.ERROR, __file__, 1, msg, (), None)

    assert noise.filter(record("Failed to detach context")) is False
    assert noise.filter(record("Failed to attach context")) is True


def test_a_long_unsampled_call_keeps_its_first_spans_and_its_error() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    keep = TailKeep(SimpleSpanProcessor(exporter), 0.0)
    keep.MAX_SPANS_PER_TRACE = 5
    provider.add_span_processor(keep)
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("gateway.call"):
        for i in range(10):
            with tracer.start_as_current_span(f"gateway.turn{i}"):
                pass
        with tracer.start_as_current_span("gateway.turn-failed") as failed:
            failed.set_status(Status(StatusCode.ERROR, "the turn failed"))
    names = [s.name for s in exporter.get_finished_spans()]
    assert names == [f"gateway.turn{i}" for i in range(5)] + ["gateway.turn-failed", "gateway.call"]
    assert keep.dropped == 5


def test_json_log_lines_inside_a_span_carry_its_ids_and_the_next_hop_its_traceparent() -> None:
    provider = TracerProvider()
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(logs._ContextFilter())
    handler.setFormatter(logs.JsonFormatter())
    log = logging.getLogger("test.telemetry.ids")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    logs.set_trace_ids_source(telemetry.current_trace_ids)
    context.set_traceparent_source(telemetry.current_traceparent)
    try:
        log.info("outside")
        with provider.get_tracer("test").start_as_current_span("gateway.turn") as span:
            log.info("inside")
            md = dict(context.RequestContext("t1", "c1").metadata())
        ids = span.get_span_context()
    finally:
        logs.set_trace_ids_source(None)
        context.set_traceparent_source(None)
        log.removeHandler(handler)
    outside, inside = (json.loads(line) for line in stream.getvalue().splitlines())
    assert "trace_id" not in outside
    assert inside["trace_id"] == f"{ids.trace_id:032x}" and inside["span_id"] == f"{ids.span_id:016x}"
    assert md["traceparent"] == f"00-{ids.trace_id:032x}-{ids.span_id:016x}-{int(ids.trace_flags):02x}"
    assert int(ids.trace_flags) & 1  # sampled: the next hop records it too
    # Off (no source installed): the context's own traceparent, as received, is forwarded.
    assert (
        dict(context.RequestContext("t1", "c1", traceparent="00-ab-cd-01").metadata())["traceparent"]
        == "00-ab-cd-01"
    )
