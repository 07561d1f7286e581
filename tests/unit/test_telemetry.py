"""Tracing set-up: off unless asked, and the tail decision that keeps sampled and errored calls."""

from __future__ import annotations

import logging

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import TraceIdRatioBased
from opentelemetry.trace import Status, StatusCode

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
