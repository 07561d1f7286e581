"""TelephonyService.CreateOutboundCall over real gRPC and PostgreSQL, with the real livekit-api
client against the Twirp double: room, agent dispatch, dial through the tenant's own outbound
trunk, and the call's steps; SIP failures, bad input, other tenants' agents, RBAC."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import grpc.aio
import pytest
from google.protobuf import duration_pb2

from common.gen.voiceai.telephony.v1 import telephony_service_pb2 as tel
from tenant_svc.db.database import DatabaseSettings
from tenant_svc.telephony import LiveKitSettings
from tests.doubles.livekit_twirp import DialScript, LiveKitDouble
from tests.integration.livekit_sip_harness import SipApi, fresh_number, ours, sip_tenant_api
from tests.integration.tenant_harness import tenant_api

State = tel.CreateOutboundCallResponse.State


@pytest.fixture(scope="module")
def double() -> Iterator[LiveKitDouble]:
    with LiveKitDouble() as d:
        yield d


@pytest.fixture(scope="module")
def key_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return Path(tmp_path_factory.mktemp("dev-auth"))


@pytest.fixture(scope="module")
async def api(
    database_settings: DatabaseSettings, key_dir: Path, double: LiveKitDouble
) -> AsyncIterator[SipApi]:
    async with sip_tenant_api(database_settings, key_dir, double) as running:
        yield running


def _call(tenant: str, to: str, agent: str = "front-desk", **kw: object) -> tel.CreateOutboundCallRequest:
    return tel.CreateOutboundCallRequest(
        parent=f"tenants/{tenant}",
        agent=f"tenants/{tenant}/agents/{agent}",
        to_number=to,
        **kw,  # type: ignore[arg-type]
    )


async def status_of(
    api: SipApi, request: tel.CreateOutboundCallRequest, *roles: str
) -> tuple[grpc.StatusCode, str]:
    tenant = request.parent.split("/")[1]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in api.phones.CreateOutboundCall(
            request, metadata=api.md(tenant, *(roles or ("admin",)))
        ):
            pass
    return caught.value.code(), caught.value.details() or ""


async def test_a_call_is_dialed_answered_and_ended(api: SipApi, double: LiveKitDouble) -> None:
    t = await api.new_tenant()
    await api.new_agent(t, "other")
    await api.new_agent(t)
    await api.new_number(t, agent="other")
    mine = await api.new_number(t)
    to = fresh_number()
    double.script_dial(to, DialScript(ring_after_s=0.05, answer_after_s=0.4))
    steps: list[tel.CreateOutboundCallResponse] = []
    async for step in api.phones.CreateOutboundCall(_call(t, to), metadata=api.md(t, "agent")):
        steps.append(step)
        if step.state == State.STATE_ANSWERED:
            double.hang_up(step.room, step.participant_identity)
    assert [s.state for s in steps] == [
        State.STATE_DIALING,
        State.STATE_RINGING,
        State.STATE_ANSWERED,
        State.STATE_ENDED,
    ]
    room = steps[0].room
    assert room.startswith(f"call-{t}-out-") and all(s.room == room for s in steps)

    [dispatch] = [s.request for s in double.calls("CreateDispatch") if s.request.room == room]  # type: ignore[attr-defined]
    assert dispatch.agent_name == "voiceai-gateway"
    assert json.loads(dispatch.metadata) | {
        "tenant_id": t,
        "agent_id": "front-desk",
        "to_number": to,
    } == json.loads(dispatch.metadata)
    [dial] = [s.request for s in double.calls("CreateSIPParticipant") if s.request.room_name == room]  # type: ignore[attr-defined]
    assert dial.sip_call_to == to and dial.sip_number == mine.e164_number  # the agent's own number
    _, _, [outbound] = ours(double, t)
    assert dial.sip_trunk_id == outbound.sip_trunk_id and outbound.address == "sip.carrier.test:5060"
    assert len(outbound.numbers) == 2  # only this tenant's numbers may be presented
    with double.lock:
        assert room not in double.rooms  # ended calls leave no room behind


async def test_a_busy_callee_is_failed_with_the_sip_status(api: SipApi, double: LiveKitDouble) -> None:
    t = await api.new_tenant()
    await api.new_agent(t)
    await api.new_number(t)
    to = fresh_number()
    double.script_dial(to, DialScript(sip_status=(486, "Busy Here")))
    steps = [s async for s in api.phones.CreateOutboundCall(_call(t, to), metadata=api.md(t, "admin"))]
    assert steps[0].state == State.STATE_DIALING and steps[-1].state == State.STATE_FAILED
    assert (steps[-1].sip_status_code, steps[-1].sip_status) == (486, "Busy Here")
    assert "486" in steps[-1].reason
    with double.lock:
        assert steps[0].room not in double.rooms


async def test_bad_input_and_other_tenants_agents(api: SipApi) -> None:
    t = await api.new_tenant()
    other = await api.new_tenant()
    await api.new_agent(t)
    await api.new_agent(other)
    await api.new_number(t)
    bad_number = await status_of(api, _call(t, "555-0100"))
    assert bad_number[0] == grpc.StatusCode.INVALID_ARGUMENT and "to_number" in bad_number[1]
    theirs = _call(t, fresh_number())
    theirs.agent = f"tenants/{other}/agents/front-desk"
    assert (await status_of(api, theirs))[0] == grpc.StatusCode.NOT_FOUND
    assert (await status_of(api, _call(t, fresh_number(), agent="nobody")))[0] == grpc.StatusCode.NOT_FOUND
    not_ours = await status_of(api, _call(t, fresh_number(), from_number=fresh_number()))
    assert not_ours[0] == grpc.StatusCode.INVALID_ARGUMENT and "from_number" in not_ours[1]
    quick = _call(t, fresh_number(), ringing_timeout=duration_pb2.Duration(seconds=1))
    assert (await status_of(api, quick))[0] == grpc.StatusCode.INVALID_ARGUMENT
    assert (await status_of(api, _call(t, fresh_number()), "viewer"))[0] == grpc.StatusCode.PERMISSION_DENIED
    cross = _call(other, fresh_number())
    code, _ = await status_of_with(api, cross, tenant=t)
    assert code == grpc.StatusCode.PERMISSION_DENIED


async def status_of_with(
    api: SipApi, request: tel.CreateOutboundCallRequest, *, tenant: str
) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in api.phones.CreateOutboundCall(request, metadata=api.md(tenant, "admin")):
            pass
    return caught.value.code(), caught.value.details() or ""


async def test_no_number_or_no_carrier_is_failed_precondition(
    api: SipApi, database_settings: DatabaseSettings, key_dir: Path, double: LiveKitDouble
) -> None:
    t = await api.new_tenant()
    await api.new_agent(t)
    code, details = await status_of(api, _call(t, fresh_number()))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "no phone number" in details
    async with sip_tenant_api(database_settings, key_dir, double, sip_outbound_address="") as no_carrier:
        await no_carrier.new_number(t)
        code, details = await status_of(no_carrier, _call(t, fresh_number()))  # type: ignore[arg-type]
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "VOICEAI_LIVEKIT_SIP_OUTBOUND_ADDRESS" in details


async def test_livekit_not_configured_refuses_calls_and_says_so_once(
    database_settings: DatabaseSettings,
    key_dir: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("LIVEKIT_URL", "LIVEKIT_API_KEY", "LIVEKIT_API_SECRET"):
        monkeypatch.delenv(name, raising=False)
    assert not LiveKitSettings().enabled
    caplog.set_level("INFO")
    async with tenant_api(database_settings, key_dir) as plain:
        t = await plain.new_tenant()
        await plain.new_agent(t)
        code, details = await status_of(
            SipApi(plain.address, key_dir, plain.channel), _call(t, fresh_number())
        )
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "LIVEKIT_URL" in details
    assert caplog.text.count("LiveKit SIP provisioning and outbound calls are off") == 1
