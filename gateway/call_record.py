"""The record of one call (transcript, per-turn latencies, usage) as tenant_svc stores it.

``CallRecordBuilder`` is fed from two seams that CallSession already has, so the call logic does
not know records exist: the conversation store (what the caller said and what the agent was
actually heard saying, with interruptions) and the transport's events (turn metrics).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from common.gen.voiceai.tenant.v1 import resources_pb2 as pb
from gateway.input_limits import WrappedTransport
from gateway.session.events import (
    CallEnded,
    CallTransport,
    EndReason,
    OutboundEvent,
    TurnTimings,
)
from gateway.session.history import ConversationStore, HistoryEntry
from gateway.turn_failures import TurnFailed

MAX_TURNS = 10_000


@dataclass(slots=True)
class _Turn:
    caller_text: str = ""
    agent_text: str = ""
    interrupted: bool = False
    failed: bool = False
    timings: TurnTimings | None = None


class CallRecordBuilder:
    """Collects one call's turns as they happen; ``build`` makes the tenant_svc Call."""

    def __init__(
        self, tenant_id: str, agent_id: str, direction: pb.CallDirection = pb.CALL_DIRECTION_INBOUND
    ) -> None:
        self.tenant_id = tenant_id
        self.agent_id = agent_id
        self.direction = direction
        self.started = datetime.now(UTC)
        self._t0 = time.monotonic()
        self._turns: dict[int, _Turn] = {}
        # Durable records (gateway/records): called when a turn's timings arrive and when the
        # agent's words are stored, so the record is written as the call goes; ``revision``
        # counts snapshots.
        self.on_turn: Callable[[], None] | None = None
        self.revision = 0

    def _turn(self, index: int) -> _Turn | None:
        if index not in self._turns and len(self._turns) >= MAX_TURNS:
            return None
        return self._turns.setdefault(index, _Turn())

    def entry(self, entry: HistoryEntry) -> None:
        turn = self._turn(entry.turn)
        if turn is None:
            return
        if entry.role == "user":
            turn.caller_text = f"{turn.caller_text} {entry.text}".strip()
        else:
            turn.agent_text = f"{turn.agent_text} {entry.text}".strip()
            turn.interrupted = turn.interrupted or entry.interrupted
            if self.on_turn is not None:  # what the agent was heard saying: worth keeping now
                self.on_turn()

    def event(self, event: OutboundEvent) -> None:
        if isinstance(event, TurnTimings):
            turn = self._turn(event.turn)
            if turn is not None:
                turn.timings = event
                turn.interrupted = turn.interrupted or event.interrupted
            if self.on_turn is not None:
                self.on_turn()

    def turn_failed(self, index: int) -> None:
        """Marks turn ``index`` as failed (the agent apologised instead of answering)."""
        turn = self._turn(index)
        if turn is not None:
            turn.failed = True

    def next_revision(self) -> int:
        """The revision of the next snapshot of this record (1, 2, ...)."""
        self.revision += 1
        return self.revision

    def progress(self) -> pb.Call:
        """The record so far, for a call still running (status IN_PROGRESS, no end)."""
        call = pb.Call(
            agent=f"tenants/{self.tenant_id}/agents/{self.agent_id}" if self.agent_id else "",
            status=pb.CALL_STATUS_IN_PROGRESS,
            direction=self.direction,
        )
        call.start_time.FromDatetime(self.started)
        self._add_turns(call)
        return call

    def build(self, ended: CallEnded | None) -> pb.Call:
        failed = ended is None or ended.reason in (EndReason.SERVICE_ERROR, EndReason.INVALID_INPUT)
        call = pb.Call(
            agent=f"tenants/{self.tenant_id}/agents/{self.agent_id}" if self.agent_id else "",
            status=pb.CALL_STATUS_FAILED if failed else pb.CALL_STATUS_COMPLETED,
            direction=self.direction,
            end_reason=ended.reason.name.lower() if ended else "error",
        )
        call.start_time.FromDatetime(self.started)
        call.end_time.FromDatetime(datetime.now(UTC))
        self._add_turns(call)
        if ended is not None:
            u = ended.usage
            call.usage.stt_seconds = u.stt_seconds
            call.usage.llm_prompt_tokens = u.llm_prompt_tokens
            call.usage.llm_completion_tokens = u.llm_completion_tokens
            call.usage.tts_characters = u.tts_characters
            call.usage.tts_seconds = u.tts_seconds
            call.usage.lines.extend(u.lines.lines())  # issue 17: priced by tenant_svc
        return call

    def _add_turns(self, call: pb.Call) -> None:
        for index in sorted(self._turns):
            t = self._turns[index]
            out = call.turns.add(
                index=index,
                caller_text=t.caller_text,
                agent_text=t.agent_text,
                interrupted=t.interrupted,
                failed=t.failed,
            )
            if t.timings is not None:
                out.stt_final_ms = t.timings.stt_final_ms or 0.0
                out.llm_first_token_ms = t.timings.llm_first_token_ms or 0.0
                out.tts_first_audio_ms = t.timings.tts_first_audio_ms or 0.0
                out.first_audio_out_ms = t.timings.first_audio_out_ms or 0.0


class RecordingTransport(WrappedTransport):
    """A CallTransport that shows every outbound event to the builder on its way out."""

    def __init__(self, inner: CallTransport, builder: CallRecordBuilder) -> None:
        super().__init__(inner)
        self._builder = builder

    def send_event(self, event: OutboundEvent | TurnFailed) -> None:
        """Records ``event``, then forwards it (``TurnFailed`` is for the record only)."""
        if isinstance(event, TurnFailed):
            self._builder.turn_failed(event.turn)
            return
        self._builder.event(event)
        self._inner.send_event(event)


class RecordingStore:
    """A ConversationStore for one call that also hands each entry to the builder."""

    def __init__(self, inner: ConversationStore, builder: CallRecordBuilder) -> None:
        self._inner = inner
        self._builder = builder

    async def append(self, tenant_id: str, call_id: str, entry: HistoryEntry) -> None:
        self._builder.entry(entry)
        await self._inner.append(tenant_id, call_id, entry)

    async def history(self, tenant_id: str, call_id: str) -> list[HistoryEntry]:
        return await self._inner.history(tenant_id, call_id)

    async def drop(self, tenant_id: str, call_id: str) -> None:
        await self._inner.drop(tenant_id, call_id)
