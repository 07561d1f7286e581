"""One call runner for every ingress: admit, record, pace, run the CallSession, finish.

Converse (``converse.py``) and LiveKit rooms (``livekit/calls.py``) differ only in how they
carry audio and report the end; both hand the call to ``CallRunner``: ``admit`` takes a quota
lease before any work starts (RESOURCE_EXHAUSTED when the tenant is over it), ``call`` builds the
call's record seams and its ``CallSession`` and, however the block ends, writes the record and
releases the lease exactly once. Each ingress keeps its own active-calls gauge: the HPAs scale
each deployment on its own (``voiceai_gateway_active_calls``, ``voiceai_livekit_active_calls``).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from common.gen.voiceai.tenant.v1 import resources_pb2 as pb
from common.quotas import Lease
from gateway.agents import Agent
from gateway.call_record import CallRecordBuilder, RecordingStore, RecordingTransport
from gateway.call_trace import CallTrace
from gateway.input_limits import LimitedInput
from gateway.session.call import CallSession, SessionSettings
from gateway.session.events import CallEnded, CallTransport
from gateway.session.history import ConversationStore
from gateway.session.playout import Pacer
from gateway.session.reply import PhraseCache
from gateway.session.services import MeshClients
from gateway.tenancy import CallLedger
from gateway.usage_quota import CallBudget


@dataclass(frozen=True, slots=True)
class CallCore:
    """What every call on this process shares, whichever ingress carries it."""

    clients: MeshClients
    pacer: Pacer
    store: ConversationStore
    phrases: PhraseCache
    session_settings: SessionSettings
    ledger: CallLedger | None = None


@dataclass(slots=True)
class RunningCall:
    """One admitted call: its session; the ingress sets ``ended`` (None: it failed)."""

    session: CallSession
    ended: CallEnded | None = None


class CallRunner:
    """Admits calls and runs them with their record (see module docstring)."""

    def __init__(self, core: CallCore) -> None:
        self.core = core

    async def admit(self, tenant_id: str, call_id: str) -> Lease | None:
        """A quota lease for the call (None without quotas); raises ResourceExhausted when over."""
        ledger = self.core.ledger
        return await ledger.admit(tenant_id, call_id) if ledger is not None else None

    async def usage_budget(self, tenant_id: str) -> CallBudget | None:
        """What the tenant's monthly usage limits leave for this call (None: no limits known);
        raises ResourceExhausted naming the limit and its reset when one is already reached."""
        ledger = self.core.ledger
        return await ledger.usage_budget(tenant_id) if ledger is not None else None

    @contextlib.asynccontextmanager
    async def call(
        self,
        *,
        tenant_id: str,
        call_id: str,
        agent: Agent,
        transport: CallTransport,
        lease: Lease | None,
        record_agent_id: str,
        direction: pb.CallDirection = pb.CALL_DIRECTION_INBOUND,
        usage_budget: CallBudget | None = None,
        numbers: tuple[str, str] = ("", ""),
        ingress: str = "converse",
        trace_attributes: dict[str, str] | None = None,
    ) -> AsyncIterator[RunningCall]:
        """The call's session, recorded; its record is written (and the lease released) on exit."""
        core = self.core
        record = CallRecordBuilder(tenant_id, record_agent_id, direction)
        if core.ledger is not None:
            core.ledger.track(tenant_id, call_id, record)  # durable: written as the call goes
        core.pacer.start()
        # The call's trace: begun before the session, whose tasks and playout inherit the span.
        call_span = CallTrace.begin(
            tenant_id=tenant_id,
            call_id=call_id,
            agent_id=agent.agent_id,
            ingress=ingress,
            attributes=trace_attributes,
        )
        session = CallSession(
            tenant_id=tenant_id,
            call_id=call_id,
            agent=agent,
            # DTMF bounded per message and per call, whichever ingress carries it.
            transport=RecordingTransport(LimitedInput(transport), record),
            clients=core.clients,
            pacer=core.pacer,
            store=RecordingStore(core.store, record),
            phrases=core.phrases,
            settings=core.session_settings,
        )
        session.usage_budget = usage_budget  # ended after the turn at a hard usage limit
        running = RunningCall(session)
        try:
            yield running
        finally:
            if call_span is not None:
                ended = running.ended
                call_span.end(ended.reason.name.lower() if ended else "error", turns=session.turn)
            if core.ledger is not None:
                call = record.build(running.ended)
                # A phone call's (from, to) numbers: its telephony minutes are priced from them.
                call.from_number, call.to_number = numbers
                core.ledger.finish(lease, tenant_id, call_id, call)
