"""The Converse gRPC ingress: a CallTransport over one bidirectional stream, and its servicer.

Outbound policy: agent audio and events go through a bounded outbox. A client that stops
reading fills it (the pacer keeps producing 50 frames/s); the call is then ended with
RESOURCE_EXHAUSTED instead of buffering without bound.

Error endings: a call that fails mid-way (say, the caller sent a bad frame) first gets a
``call_ended`` naming the reason, and its error status only once the caller has stopped
writing (half-close or hangup; at most ``error_linger_s``). A grpc.aio client whose write
races a status that already arrived reports INTERNAL instead of that status
(grpc/grpc#36066); a caller that stops writing on ``call_ended`` never hits that race.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable

import grpc.aio
from google.protobuf.message import DecodeError
from prometheus_client import Counter, Gauge

from common import context
from common.audio import LINEAR16, MULAW, Format, validate_format
from common.errors import InvalidArgument, ResourceExhausted, Unavailable, VoiceAIError
from common.gen.voiceai.common.v1 import usage_pb2
from common.gen.voiceai.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from common.streams import first_config
from common.tasks import cancel_and_wait
from gateway.agents import AgentCatalog, agent_from_proto
from gateway.call_record import CallRecordBuilder, RecordingStore, RecordingTransport
from gateway.call_trace import CallTrace
from gateway.session.call import CallSession, SessionSettings
from gateway.session.events import (
    AgentSpeech,
    CallEnded,
    CallerAudio,
    CallerDtmf,
    CallerHangup,
    CallerTranscript,
    CallStarted,
    ClearAudio,
    EndReason,
    InboundEvent,
    OutboundEvent,
    TurnTimings,
)
from gateway.session.history import ConversationStore
from gateway.session.playout import Pacer
from gateway.session.reply import PhraseCache
from gateway.session.services import MeshClients
from gateway.tenancy import CallLedger

log = logging.getLogger(__name__)

# Caller formats both the recognizer and the synthesizer accept as-is (no transcoding hop).
CALLER_RATES: dict[int, frozenset[int]] = {
    LINEAR16: frozenset({8000, 16000, 48000}),
    MULAW: frozenset({8000}),
}

ACTIVE_CALLS = Gauge("voiceai_gateway_active_calls", "Calls in progress on this gateway")
CALLS = Counter("voiceai_gateway_calls_total", "Calls ended", ["reason"])


def _ignore() -> None:
    return None


class _Outbox:
    """Bounded FIFO of responses with a close marker that never blocks the producer."""

    __slots__ = ("_closed", "_items", "_limit", "_wake")

    def __init__(self, limit: int) -> None:
        self._items: deque[gateway_pb2.ConverseResponse] = deque()
        self._limit = limit
        self._wake = asyncio.Event()
        self._closed = False

    def put(self, msg: gateway_pb2.ConverseResponse) -> bool:
        if self._closed:
            return True
        if len(self._items) >= self._limit:
            return False
        self._items.append(msg)
        self._wake.set()
        return True

    def close(self, discard: bool = False) -> None:
        self._closed = True
        if discard:
            self._items.clear()
        self._wake.set()

    async def get(self) -> gateway_pb2.ConverseResponse | None:
        while True:
            if self._items:
                return self._items.popleft()
            if self._closed:
                return None
            self._wake.clear()
            await self._wake.wait()


def event_to_proto(event: OutboundEvent) -> gateway_pb2.ConverseResponse:
    R = gateway_pb2.ConverseResponse
    if isinstance(event, AgentSpeech):
        return R(agent_speech=gateway_pb2.AgentSpeech(text=event.text, turn=event.turn))
    if isinstance(event, CallerTranscript):
        return R(
            caller_transcript=gateway_pb2.CallerTranscript(
                text=event.text, is_final=event.is_final, turn=event.turn
            )
        )
    if isinstance(event, TurnTimings):

        def ms(v: float | None) -> int:
            return -1 if v is None else round(v)

        return R(
            turn_metrics=gateway_pb2.TurnMetrics(
                turn=event.turn,
                stt_final_ms=ms(event.stt_final_ms),
                end_of_turn_ms=ms(event.end_of_turn_ms),
                llm_first_token_ms=ms(event.llm_first_token_ms),
                tts_first_audio_ms=ms(event.tts_first_audio_ms),
                first_audio_out_ms=ms(event.first_audio_out_ms),
                interrupted=event.interrupted,
                filler_spoken=event.filler_spoken,
            )
        )
    if isinstance(event, ClearAudio):
        return R(clear=gateway_pb2.Clear(turn=event.turn))
    if isinstance(event, CallStarted):
        return R(call_started=gateway_pb2.CallStarted(call_id=event.call_id, agent_id=event.agent_id))
    if isinstance(event, CallEnded):
        u = event.usage
        return R(
            call_ended=gateway_pb2.CallEnded(
                reason=event.reason.value,  # type: ignore[arg-type]
                message=event.message,
                turns=event.turns,
                usage=usage_pb2.Usage(
                    stt_seconds=u.stt_seconds,
                    llm_prompt_tokens=u.llm_prompt_tokens,
                    llm_completion_tokens=u.llm_completion_tokens,
                    tts_characters=u.tts_characters,
                    tts_seconds=u.tts_seconds,
                ),
            )
        )
    raise TypeError(f"unknown event {event!r}")


class ConverseTransport:
    """CallTransport over a Converse stream (requests after the config; responses via outbox)."""

    def __init__(
        self,
        requests: AsyncIterator[gateway_pb2.ConverseRequest],
        fmt: Format,
        outbox_limit: int,
        read_request: Callable[[], Awaitable[object]] | None = None,
    ) -> None:
        self._requests = requests
        # ServicerContext.read, for reading on after the call: the request iterator is an async
        # generator, and one that raised (an unparsable message) cannot be resumed.
        self._read_request = read_request
        self._fmt = fmt
        self.outbox = _Outbox(outbox_limit)
        self.on_overflow: Callable[[], None] = lambda: None
        self.overflowed = False  # the client stopped reading
        self.caller_done = False  # the caller half-closed or hung up: it writes nothing more
        # A read cancelled mid-flight leaves grpc's receive operation pending, and this stream
        # cannot be read again; a read that completed (even into an error) leaves it readable.
        self.readable = True

    @property
    def caller_format(self) -> Format:
        return self._fmt

    async def inbound(self) -> AsyncIterator[InboundEvent]:
        while True:
            try:
                req = await anext(self._requests)
            except StopAsyncIteration:
                self.caller_done = True
                return
            except DecodeError as e:
                raise InvalidArgument(
                    f"a request message could not be parsed ({e}); string fields must be valid UTF-8"
                ) from None
            except asyncio.CancelledError:
                self.readable = False
                raise
            kind = req.WhichOneof("request")
            if kind == "audio":
                yield CallerAudio(req.audio)
            elif kind == "dtmf":
                yield CallerDtmf(req.dtmf)
            elif kind == "hangup":
                self.caller_done = True
                yield CallerHangup()
                return
            elif kind == "config":
                raise InvalidArgument("'config' may only be sent once, as the first message of the call")
            else:
                raise InvalidArgument("empty ConverseRequest: set one of audio, dtmf or hangup")

    async def wait_caller_done(self, timeout_s: float) -> None:
        """Read and drop what the caller still sends until it half-closes or hangs up (at most
        ``timeout_s``): only then may an error status go out without racing a client write."""
        if self.caller_done or not self.readable or self._read_request is None:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                while True:
                    try:
                        req = await self._read_request()
                    except DecodeError:
                        continue  # still the caller writing; it is ending anyway
                    if req is grpc.aio.EOF or (
                        isinstance(req, gateway_pb2.ConverseRequest) and req.WhichOneof("request") == "hangup"
                    ):
                        return

    def send_audio(self, frame: bytes) -> None:
        self._put(gateway_pb2.ConverseResponse(audio=frame))

    def send_event(self, event: OutboundEvent) -> None:
        self._put(event_to_proto(event))

    def _put(self, msg: gateway_pb2.ConverseResponse) -> None:
        if not self.outbox.put(msg):
            self.overflowed = True
            self.on_overflow()


class CallGatewayServicer(gateway_pb2_grpc.CallGatewayServiceServicer):
    """Converse: validates the call config, then hands the stream to a CallSession."""

    def __init__(
        self,
        *,
        clients: MeshClients,
        catalog: AgentCatalog,
        store: ConversationStore,
        pacer: Pacer,
        phrases: PhraseCache,
        session_settings: SessionSettings,
        outbox_limit: int = 500,
        error_linger_s: float = 1.0,
        ledger: CallLedger | None = None,
    ) -> None:
        self._ledger = ledger
        self._clients = clients
        self._catalog = catalog
        self._store = store
        self._pacer = pacer
        self._phrases = phrases
        self._session_settings = session_settings
        self._outbox_limit = outbox_limit
        self._error_linger_s = error_linger_s
        self.draining = False

    async def Converse(  # noqa: N802 - gRPC method name
        self,
        request_iterator: AsyncIterator[gateway_pb2.ConverseRequest],
        context_: grpc.aio.ServicerContext,
    ) -> AsyncIterator[gateway_pb2.ConverseResponse]:
        if self.draining:
            raise Unavailable("this gateway is draining; place the call on another instance")
        first, requests = await first_config(request_iterator)
        cfg = first.config
        fmt = validate_format(cfg.caller_audio_format, field="config.caller_audio_format", rates=CALLER_RATES)
        source = cfg.WhichOneof("agent_source")
        if source == "agent":
            agent = agent_from_proto(cfg.agent)
        elif source == "agent_id":
            agent = await self._catalog.get(context.tenant_id(), cfg.agent_id)
        else:
            raise InvalidArgument("config must name an 'agent_id' or carry an inline 'agent'")
        await self._clients.check_ready()
        tenant_id, call_id = context.tenant_id(), context.call_id()
        # Over the tenant's quota -> RESOURCE_EXHAUSTED with a retry hint, before any work starts.
        lease = await self._ledger.admit(tenant_id, call_id) if self._ledger else None
        record = CallRecordBuilder(tenant_id, "" if source == "agent" else agent.agent_id)
        self._pacer.start()

        transport = ConverseTransport(requests, fmt, self._outbox_limit, context_.read)
        # Tracing hook (issue 16): before the session, whose tasks and playout inherit the span.
        call_span = CallTrace.begin(
            tenant_id=tenant_id, call_id=call_id, agent_id=agent.agent_id, ingress="converse"
        )
        session = CallSession(
            tenant_id=tenant_id,
            call_id=call_id,
            agent=agent,
            transport=RecordingTransport(transport, record),
            clients=self._clients,
            pacer=self._pacer,
            store=RecordingStore(self._store, record),
            phrases=self._phrases,
            settings=self._session_settings,
        )
        overflow = ResourceExhausted(
            f"the client read no agent audio for {self._outbox_limit * 20 / 1000:.0f} s; the call was"
            " ended to keep memory bounded (read the response stream continuously)"
        )

        def on_overflow() -> None:
            # Drop what is queued and end the call. The handler may stay parked in one send
            # to the stalled client (bounded by the HTTP/2 window) until that client reads
            # again, sees the status, or keepalive declares it dead.
            transport.outbox.close(discard=True)
            session.abort(overflow)

        transport.on_overflow = on_overflow
        ACTIVE_CALLS.inc()
        task = asyncio.get_running_loop().create_task(session.run(), name=f"call:{session.call_id[:8]}")
        task.add_done_callback(lambda _t: transport.outbox.close())
        reason = "error"
        ended: CallEnded | None = None
        try:
            while (msg := await transport.outbox.get()) is not None:
                yield msg
            try:
                ended = task.result()
            except VoiceAIError as error:
                log.info("call failed: %s: %s", error.code.name, error.message)
                if not transport.overflowed:  # a client that reads nothing would never see it
                    why = (
                        EndReason.INVALID_INPUT
                        if isinstance(error, InvalidArgument)
                        else EndReason.SERVICE_ERROR
                    )
                    ended = CallEnded(why, error.message, session.usage, session.turn)
                    yield event_to_proto(ended)
                    await transport.wait_caller_done(self._error_linger_s)
                raise
            reason = ended.reason.name.lower()
            log.info("call ended: %s (%s), %d turns", ended.reason.name, ended.message, ended.turns)
            yield event_to_proto(ended)
        finally:
            ACTIVE_CALLS.dec()
            CALLS.labels(reason).inc()
            if call_span is not None:
                call_span.end(reason, turns=session.turn)
            await cancel_and_wait(task)
            transport.on_overflow = _ignore  # the closure refers to the transport: break the cycle
            if task.done() and not task.cancelled():
                task.exception()  # retrieved: it was reported to the client as the status
            if self._ledger is not None:
                self._ledger.finish(lease, tenant_id, call_id, record.build(ended))
