"""CallRunner: every ingress's admit -> record -> session -> finish, the record written once
however the ingress's block ends."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, cast

import pytest

from common.audio import LINEAR16, Format
from common.discovery import StaticResolver
from common.gen.voiceai.tenant.v1 import resources_pb2 as pb
from gateway.agents import Agent
from gateway.call_runner import CallCore, CallRunner
from gateway.session.call import SessionSettings
from gateway.session.events import CallEnded, EndReason, InboundEvent, OutboundEvent, Usage
from gateway.session.history import InMemoryConversationStore
from gateway.session.playout import Pacer
from gateway.session.reply import PhraseCache
from gateway.session.services import MeshClients
from gateway.tenancy import CallLedger


class _Ledger:
    def __init__(self) -> None:
        self.admitted: list[str] = []
        self.finished: list[tuple[object, str, pb.Call]] = []
        self.tracked: list[str] = []

    async def admit(self, tenant_id: str, call_id: str) -> object:
        self.admitted.append(call_id)
        return f"lease-{call_id}"

    def finish(self, lease: object, tenant_id: str, call_id: str, call: pb.Call) -> None:
        self.finished.append((lease, call_id, call))

    def track(self, tenant_id: str, call_id: str, record: object) -> None:
        self.tracked.append(call_id)

    async def usage_budget(self, tenant_id: str) -> None:
        return None


class _Transport:
    caller_format = Format(LINEAR16, 16000)

    async def inbound(self) -> AsyncIterator[InboundEvent]:
        return
        yield  # pragma: no cover

    def send_audio(self, frame: bytes) -> None:
        pass

    def send_event(self, event: OutboundEvent) -> None:
        pass


async def test_the_record_is_written_once_with_how_the_call_ended() -> None:
    ledger = _Ledger()
    clients = MeshClients(StaticResolver({}))
    core = CallCore(
        clients=clients,
        pacer=Pacer(),
        store=InMemoryConversationStore(),
        phrases=PhraseCache(),
        session_settings=SessionSettings(),
        ledger=cast(CallLedger, ledger),
    )
    runner = CallRunner(core)
    lease: Any = await runner.admit("t1", "call-1")
    async with runner.call(
        tenant_id="t1",
        call_id="call-1",
        agent=Agent(agent_id="a1"),
        transport=_Transport(),
        lease=lease,
        record_agent_id="a1",
        direction=pb.CALL_DIRECTION_OUTBOUND,
    ) as running:
        assert running.session.call_id == "call-1" and running.session.tenant_id == "t1"
        running.ended = CallEnded(EndReason.CALLER_HANGUP, "bye", Usage(), 0)
    with pytest.raises(RuntimeError):
        async with runner.call(
            tenant_id="t1",
            call_id="call-2",
            agent=Agent(agent_id="a1"),
            transport=_Transport(),
            lease=None,
            record_agent_id="",
        ):
            raise RuntimeError("the ingress failed")
    assert ledger.admitted == ["call-1"]
    (lease1, id1, rec1), (lease2, id2, rec2) = ledger.finished
    assert (lease1, id1, rec1.agent, rec1.direction) == (
        "lease-call-1",
        "call-1",
        "tenants/t1/agents/a1",
        pb.CALL_DIRECTION_OUTBOUND,
    )
    assert (lease2, id2, rec2.agent) == (None, "call-2", "")
    assert rec1.status == pb.CALL_STATUS_COMPLETED and rec2.status == pb.CALL_STATUS_FAILED
    await core.pacer.stop()
    await clients.close()
