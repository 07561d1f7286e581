"""Tracing for every process: OpenTelemetry SDK, OTLP or file export, one trace per call.

On when the standard ``OTEL_*`` variables ask for it (``OTEL_TRACES_EXPORTER=otlp`` or an
``OTEL_EXPORTER_OTLP[_TRACES]_ENDPOINT``) or ``VOICEAI_TRACE_FILE`` names a file. Off (the
default), nothing is installed and the hooks stay ``None``: an RPC pays one attribute check.

When on, every span is recorded (parent-based, always on) and ``TailKeep`` decides what is
exported: a trace whose id falls under ``OTEL_TRACES_SAMPLER_ARG`` (a ratio, deterministic on
the trace id, so every process keeps the same calls) as it goes; any other trace when its
local root span in this process ends, if one of its spans there ended in error.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from opentelemetry.sdk.trace import SpanProcessor
from pydantic_settings import BaseSettings, SettingsConfigDict

from common import context, logs

log = logging.getLogger(__name__)

# Health checks and reflection are not work: no spans, no RED series.
UNTRACED_PREFIXES = ("/grpc.health.v1.", "/grpc.reflection.")


class TelemetrySettings(BaseSettings):
    """The standard OpenTelemetry variables this mesh honours, plus a local trace file."""

    model_config = SettingsConfigDict(extra="ignore")

    otel_sdk_disabled: bool = False
    # "otlp" exports over OTLP (endpoint and headers: the exporter reads OTEL_EXPORTER_OTLP_*);
    # "console" prints; "none" or empty with no endpoint: off.
    otel_traces_exporter: str = ""
    otel_exporter_otlp_endpoint: str = ""
    otel_exporter_otlp_traces_endpoint: str = ""
    otel_exporter_otlp_protocol: str = "grpc"
    otel_exporter_otlp_traces_protocol: str = ""
    otel_service_name: str = ""
    # Share of calls kept when nothing in them failed (calls with an error are always kept).
    otel_traces_sampler_arg: float = 1.0
    # One JSON span per line, for a person without a tracing backend (make observe); "{service}"
    # in the path becomes the process's service name (one file per process).
    voiceai_trace_file: str = ""

    def exporters_wanted(self) -> list[str]:
        """Which exporters to build: "otlp", "console", "file"."""
        if self.otel_sdk_disabled:
            return []
        wanted = [
            name.strip()
            for name in self.otel_traces_exporter.split(",")
            if name.strip() and name.strip() != "none"
        ]
        endpoint = self.otel_exporter_otlp_traces_endpoint or self.otel_exporter_otlp_endpoint
        if not wanted and endpoint and self.otel_traces_exporter.strip() != "none":
            wanted = ["otlp"]
        if self.voiceai_trace_file:
            wanted.append("file")
        return wanted


class TailKeep(SpanProcessor):
    """A span processor that passes on the spans of traces the ratio keeps at once, and holds
    the others' until their local root ends, then passes them on if any of them erred.

    Held spans are bounded (traces, spans per trace): a long call outside the ratio keeps its
    first spans and the error that made it worth keeping."""

    MAX_TRACES = 4096
    MAX_SPANS_PER_TRACE = 1024

    def __init__(self, downstream: Any, ratio: float) -> None:
        from opentelemetry.sdk.trace.sampling import TraceIdRatioBased

        self._downstream = downstream
        self._bound = TraceIdRatioBased.get_bound_for_rate(max(0.0, min(1.0, ratio)))
        self._lock = threading.Lock()
        self._pending: OrderedDict[int, list[Any]] = OrderedDict()
        self._errored: set[int] = set()
        self._decided: OrderedDict[int, bool] = OrderedDict()
        self.dropped = 0

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        """Nothing to do when a span starts."""

    def _ratio_keeps(self, trace_id: int) -> bool:
        return (trace_id & 0xFFFFFFFFFFFFFFFF) < self._bound

    def on_end(self, span: Any) -> None:
        """Pass ``span`` on, or hold it; at its trace's local root, decide and flush."""
        from opentelemetry.trace import StatusCode

        trace_id = span.context.trace_id
        if self._ratio_keeps(trace_id):  # kept whatever happens: nothing to wait for
            self._downstream.on_end(span)
            return
        errored = span.status.status_code is StatusCode.ERROR
        local_root = span.parent is None or span.parent.is_remote
        with self._lock:
            decided = self._decided.get(trace_id)
            if decided is not None:
                flush = [span] if decided or errored else []
            else:
                if errored:
                    self._errored.add(trace_id)
                spans = self._pending.get(trace_id)
                if spans is None:
                    if len(self._pending) >= self.MAX_TRACES:
                        old, lost = self._pending.popitem(last=False)
                        self._errored.discard(old)
                        self.dropped += len(lost)
                    spans = self._pending[trace_id] = []
                if len(spans) < self.MAX_SPANS_PER_TRACE or errored or local_root:
                    spans.append(span)
                else:
                    self.dropped += 1
                if not local_root:
                    return
                keep = trace_id in self._errored
                self._errored.discard(trace_id)
                flush = self._pending.pop(trace_id) if keep else []
                if not keep:
                    self._pending.pop(trace_id, None)
                self._decided[trace_id] = keep
                if len(self._decided) > self.MAX_TRACES:
                    self._decided.popitem(last=False)
        for item in flush:
            self._downstream.on_end(item)

    def shutdown(self) -> None:
        """Shut the downstream processor down (what was never decided is dropped)."""
        self._downstream.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Flush the downstream processor."""
        return bool(self._downstream.force_flush(timeout_millis))


class _DetachNoise(logging.Filter):
    """grpc.aio finalizes a streaming handler's generator that a client abandoned in a task of
    its own, where the server span's context token cannot be reset: opentelemetry logs that as
    an error with a traceback, although the span still ends. Not an error of ours: dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != "Failed to detach context"


class _State:
    provider: Any = None


_state = _State()


def enabled() -> bool:
    """Whether tracing is installed in this process."""
    return _state.provider is not None


def _span_line(span: Any) -> str:
    return str(span.to_json(indent=None)) + "\n"


def _exporters(settings: TelemetrySettings, wanted: Sequence[str], service: str) -> list[Any]:
    out: list[Any] = []
    for name in wanted:
        if name == "otlp":
            protocol = settings.otel_exporter_otlp_traces_protocol or settings.otel_exporter_otlp_protocol
            if protocol.startswith("http"):
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

                out.append(OTLPSpanExporter())
            else:
                from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
                    OTLPSpanExporter as GrpcSpanExporter,
                )

                out.append(GrpcSpanExporter())
        elif name == "console":
            from opentelemetry.sdk.trace.export import ConsoleSpanExporter

            out.append(ConsoleSpanExporter(formatter=_span_line))
        elif name == "file":
            from opentelemetry.sdk.trace.export import ConsoleSpanExporter

            path = Path(settings.voiceai_trace_file.replace("{service}", service))
            path.parent.mkdir(parents=True, exist_ok=True)
            stream: IO[str] = path.open("a", encoding="utf-8")
            out.append(ConsoleSpanExporter(out=stream, formatter=_span_line))
        else:
            log.warning("unknown OTEL_TRACES_EXPORTER %r ignored (otlp, console or none)", name)
    return out


def setup(
    service: str,
    settings: TelemetrySettings | None = None,
    *,
    processors: Sequence[Any] = (),
) -> bool:
    """Install tracing for this process if the environment (or ``processors``, for tests) asks
    for it; returns whether it is on. Safe to call twice (the second call does nothing)."""
    if _state.provider is not None:
        return True
    settings = settings or TelemetrySettings()
    wanted = settings.exporters_wanted()
    if not wanted and not processors:
        return False
    from opentelemetry import trace
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased

    resource = Resource.create({"service.name": settings.otel_service_name or f"voiceai-{service}"})
    provider = TracerProvider(sampler=ParentBased(ALWAYS_ON), resource=resource)
    for exporter in _exporters(settings, wanted, service):
        provider.add_span_processor(TailKeep(BatchSpanProcessor(exporter), settings.otel_traces_sampler_arg))
    for processor in processors:
        provider.add_span_processor(TailKeep(processor, settings.otel_traces_sampler_arg))
    trace.set_tracer_provider(provider)
    logging.getLogger("opentelemetry.context").addFilter(_DetachNoise())
    _state.provider = provider
    context.set_traceparent_source(current_traceparent)
    logs.set_trace_ids_source(current_trace_ids)
    log.info(
        "tracing on: %s (keeping %.0f%% of calls, every call with an error)",
        ",".join(wanted) or "in-process",
        100 * settings.otel_traces_sampler_arg,
    )
    return True


def shutdown() -> None:
    """Flush and stop the exporters (at process exit)."""
    if _state.provider is not None:
        _state.provider.shutdown()


def tracer(name: str) -> Any:
    """The tracer for ``name`` (a no-op tracer when tracing is off)."""
    if _state.provider is not None:
        return _state.provider.get_tracer(name)
    from opentelemetry import trace

    return trace.get_tracer(name)


def current_traceparent() -> str:
    """The W3C ``traceparent`` of the active span, or "" when there is none."""
    from opentelemetry import trace

    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return ""
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"


def current_trace_ids() -> tuple[str, str] | None:
    """(trace_id, span_id) of the active span as hex, for log lines."""
    from opentelemetry import trace

    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return None
    return f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}"


def server_interceptors() -> list[Any]:
    """opentelemetry-instrumentation-grpc's server interceptor (health/reflection excluded), or
    nothing when tracing is off."""
    if _state.provider is None:
        return []
    from opentelemetry.instrumentation.grpc import aio_server_interceptor

    def traced(details: Any) -> bool:
        return not str(details.method).startswith(UNTRACED_PREFIXES)

    return [aio_server_interceptor(tracer_provider=_state.provider, filter_=traced)]


def span_event(name: str, **attributes: str | int | float | bool) -> None:
    """An event on the active span (a provider fallback on the stream's server span); nothing
    when tracing is off."""
    if _state.provider is None:
        return
    from opentelemetry import trace

    trace.get_current_span().add_event(name, attributes)


def span_attributes(attributes: dict[str, str | int | float | bool]) -> None:
    """Attributes on the active span (model, provider, tokens); nothing when tracing is off."""
    if _state.provider is None:
        return
    from opentelemetry import trace

    trace.get_current_span().set_attributes(attributes)


def describe(settings: TelemetrySettings | None = None) -> str:
    """Where this environment sends traces and metrics, for ``make run``'s banner."""
    settings = settings or TelemetrySettings()
    wanted = settings.exporters_wanted()
    if not wanted:
        traces = "off (set OTEL_EXPORTER_OTLP_ENDPOINT, or VOICEAI_TRACE_FILE=var/traces/{service}.jsonl)"
    else:
        where = {
            "otlp": f"OTLP to {settings.otel_exporter_otlp_traces_endpoint or settings.otel_exporter_otlp_endpoint or 'the default endpoint'}",
            "console": "stdout",
            "file": settings.voiceai_trace_file,
        }
        traces = ", ".join(where.get(name, name) for name in wanted)
    return (
        f"  traces:  {traces}\n"
        "  metrics: each process's /metrics when VOICEAI_METRICS_PORT or VOICEAI_METRICS_PORT_OFFSET is set\n"
        "  make observe: the mesh with a real Prometheus, the alert rules and trace files"
    )


if __name__ == "__main__":
    print(describe())
