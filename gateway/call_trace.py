"""The trace of one call: a root span, one span per turn, one child span per stage.

Built from what the call already measures (``TurnTimings``: milliseconds from the caller's
speech end to each stage), with explicit start and end times, so tracing adds no timing code
to the call logic. The stages of a turn follow one another (STT final, end-of-turn decision,
LLM first token, TTS first audio, first audio out): their durations add up to the turn's
latency, and the turn's span shows where it went. Barge-ins, fillers, apologies and
failovers are span events.

The call's ``CallTrace`` rides in a context variable, so every task the call starts (the
reply of each turn included) finds it; the span active in a task is what ``traceparent`` the
next hop receives (``common.context``). With tracing off, ``begin`` returns None and every
hook is one context-variable read.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from contextvars import ContextVar
from typing import Any

from common import telemetry
from gateway.session.events import TurnTimings

# (stage, span name); each stage span runs from the previous stage's mark to its own.
STAGES = (
    ("stt_final", "gateway.stt_final"),
    ("end_of_turn", "gateway.end_of_turn"),
    ("llm_first_token", "gateway.llm_first_token"),
    ("tts_first_audio", "gateway.tts_first_audio"),
    ("first_audio_out", "gateway.first_audio_out"),
)

_current: ContextVar[CallTrace | None] = ContextVar("voiceai_call_trace", default=None)


def _wall_ns(monotonic_s: float) -> int:
    """A ``time.monotonic()`` instant as epoch nanoseconds (what span times are)."""
    return time.time_ns() - int((time.monotonic() - monotonic_s) * 1e9)


class _Turn:
    __slots__ = ("span", "speech_end_ns")

    def __init__(self, span: Any, speech_end_ns: int) -> None:
        self.span = span
        self.speech_end_ns = speech_end_ns


class CallTrace:
    """Owns one call's root span and its open turn spans."""

    def __init__(self, span: Any, tracer: Any) -> None:
        self.span = span
        self._tracer = tracer
        self._turns: dict[int, _Turn] = {}
        self.failed = False

    # ------------------------------------------------------------------ call
    @classmethod
    def begin(
        cls,
        *,
        tenant_id: str,
        call_id: str,
        agent_id: str,
        ingress: str,
        attributes: dict[str, str] | None = None,
    ) -> CallTrace | None:
        """Start the call's root span and make it current for this task and the tasks it starts
        from now on; None when tracing is off."""
        if not telemetry.enabled():
            return None
        from opentelemetry import context as otel_context
        from opentelemetry import trace

        tracer = telemetry.tracer("voiceai.gateway")
        attrs = {
            "voiceai.tenant_id": tenant_id,
            "voiceai.call_id": call_id,
            "voiceai.agent_id": agent_id or "inline",
            "voiceai.ingress": ingress,
            **(attributes or {}),
        }
        span = tracer.start_span("gateway.call", attributes=attrs)
        otel_context.attach(trace.set_span_in_context(span))
        call = cls(span, tracer)
        _current.set(call)
        return call

    def end(self, reason: str, error: BaseException | None = None, turns: int = 0) -> None:
        """End open turns and the call (ERROR when the call failed or a turn did)."""
        from opentelemetry.trace import Status, StatusCode

        for number in list(self._turns):
            self._end_turn(number, None)
        self.span.set_attribute("voiceai.end_reason", reason)
        self.span.set_attribute("voiceai.turns", turns)
        if error is not None:
            self.span.record_exception(error)
            self.span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: the call failed"))
        elif self.failed or reason in {"service_error", "error"}:
            self.span.set_status(Status(StatusCode.ERROR, f"call ended: {reason}"))
        self.span.end()

    # ------------------------------------------------------------------ turns
    def turn_started(self, turn: int, speech_end: float) -> None:
        """Open turn ``turn``'s span from the caller's speech end (a monotonic instant) and make
        it current in this task, so the reply's streams are its children."""
        from opentelemetry import context as otel_context
        from opentelemetry import trace

        start = _wall_ns(speech_end)
        span = self._tracer.start_span(
            "gateway.turn",
            context=trace.set_span_in_context(self.span),
            start_time=start,
            attributes={"voiceai.turn": turn},
        )
        self._turns[turn] = _Turn(span, start)
        otel_context.attach(trace.set_span_in_context(span))

    def turn_finished(self, timings: TurnTimings) -> None:
        """Close a turn: its stage spans from ``timings``, its outcome, its end."""
        self._end_turn(timings.turn, timings)

    def turn_failed(self, turn: int, why: str) -> None:
        """A turn failed (the agent apologised): mark it, and so keep the call's trace."""
        from opentelemetry.trace import Status, StatusCode

        self.failed = True
        state = self._turns.get(turn)
        span = state.span if state is not None else self.span
        span.add_event("voiceai.apology", {"voiceai.turn": turn, "voiceai.reason": why})
        span.set_status(Status(StatusCode.ERROR, why))

    def event(self, name: str, turn: int | None = None, **attributes: str | int | float | bool) -> None:
        """An event (barge-in, filler, failover) on the turn's span, or the call's."""
        state = self._turns.get(turn) if turn is not None else None
        (state.span if state is not None else self.span).add_event(name, attributes)

    def span_since(self, name: str, started: float, **attributes: str | int | float | bool) -> None:
        """A finished child span of the call from ``started`` (monotonic) to now."""
        from opentelemetry import trace

        span = self._tracer.start_span(
            name,
            context=trace.set_span_in_context(self.span),
            start_time=_wall_ns(started),
            attributes=attributes,
        )
        span.end()

    def _end_turn(self, turn: int, timings: TurnTimings | None) -> None:
        state = self._turns.pop(turn, None)
        if state is None:
            return
        from opentelemetry import trace

        span = state.span
        if timings is not None:
            parent = trace.set_span_in_context(span)
            previous = state.speech_end_ns
            for stage, name in STAGES:
                ms = getattr(timings, f"{stage}_ms")
                if ms is None:
                    continue
                at = state.speech_end_ns + int(ms * 1e6)
                child = self._tracer.start_span(name, context=parent, start_time=min(previous, at))
                child.set_attribute("voiceai.stage_ms", ms)
                child.end(end_time=at)
                previous = max(previous, at)
                span.set_attribute(f"voiceai.{stage}_ms", ms)
            span.set_attribute("voiceai.interrupted", timings.interrupted)
            if timings.filler_spoken:
                span.add_event("voiceai.filler", {"voiceai.turn": turn})
            if timings.interrupted:
                span.add_event("voiceai.barge_in", {"voiceai.turn": turn})
        span.end()


def room_attributes(room: str, sip: bool, participant: Mapping[str, str]) -> tuple[str, dict[str, str]]:
    """The ingress of a LiveKit call and its ids for the root span: the room, and for a SIP
    caller LiveKit SIP's call id and trunk id (never the phone numbers)."""
    attributes = {"voiceai.livekit.room": room}
    for key, name in (("sip.callID", "voiceai.sip.call_id"), ("sip.trunkID", "voiceai.sip.trunk_id")):
        if participant.get(key):
            attributes[name] = participant[key]
    return ("sip" if sip else "livekit_room"), attributes


def current() -> CallTrace | None:
    """The trace of the call this task works for, if tracing is on."""
    return _current.get()


def turn_started(turn: int, speech_end: float) -> None:
    """Hook: a turn's reply task starts (see ``CallTrace.turn_started``)."""
    call = _current.get()
    if call is not None:
        call.turn_started(turn, speech_end)


def turn_finished(timings: TurnTimings) -> None:
    """Hook: a turn's timings are final."""
    call = _current.get()
    if call is not None:
        call.turn_finished(timings)


def turn_failed(turn: int, why: str) -> None:
    """Hook: a turn failed and the agent apologises."""
    call = _current.get()
    if call is not None:
        call.turn_failed(turn, why)


def event(name: str, turn: int | None = None, **attributes: str | int | float | bool) -> None:
    """Hook: something worth seeing in the call's trace happened (barge-in, failover...)."""
    call = _current.get()
    if call is not None:
        call.event(name, turn, **attributes)


def span_since(name: str, started: float, **attributes: str | int | float | bool) -> None:
    """Hook: a step of the call that took from ``started`` (monotonic) until now (a failover)."""
    call = _current.get()
    if call is not None:
        call.span_since(name, started, **attributes)


# ------------------------------------------------------------------ client spans (by hand)
# The gateway's streams to stt/llm/tts carry their context as explicit metadata, without client
# interceptors (hot path): their CLIENT spans are made here, and the traceparent sent names them.
def client_span(name: str, address: str) -> Any:
    """Start a CLIENT span for a stream to ``address`` under the active span (the turn, or the
    call); None when the call is not traced."""
    call = _current.get()
    if call is None:
        return None
    from opentelemetry.trace import SpanKind

    host, _, port = address.rpartition(":")
    return call._tracer.start_span(
        name,
        kind=SpanKind.CLIENT,
        attributes={"rpc.system": "grpc", "server.address": host, "server.port": int(port or 0)},
    )


def with_traceparent(
    metadata: tuple[tuple[str, str], ...] | None, span: Any
) -> tuple[tuple[str, str], ...] | None:
    """``metadata`` whose ``traceparent`` names ``span`` (unchanged when ``span`` is None)."""
    if span is None or metadata is None:
        return metadata
    ids = span.get_span_context()
    traceparent = f"00-{ids.trace_id:032x}-{ids.span_id:016x}-{int(ids.trace_flags):02x}"
    return (*((k, v) for k, v in metadata if k != "traceparent"), ("traceparent", traceparent))


def end_client(span: Any, error: BaseException | None = None) -> None:
    """End a client span; an RPC error marks it ERROR with its status (a cancel does not)."""
    if span is None:
        return
    if error is not None and not isinstance(error, asyncio.CancelledError):
        from opentelemetry.trace import Status, StatusCode

        code = getattr(error, "code", None)
        status = code().name if callable(code) else type(error).__name__
        span.set_attribute("rpc.grpc.status_code", status)
        span.set_status(Status(StatusCode.ERROR, status))
    span.end()
