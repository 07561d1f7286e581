"""PhoneNumber changes provision LiveKit SIP (real tenant_svc, PostgreSQL, gRPC; the real
livekit-api client against the Twirp double): create/update/delete, replays, conflicts,
outages and wrong credentials, with the database and LiveKit never left out of step."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import grpc.aio
import pytest
from google.protobuf import field_mask_pb2
from livekit.protocol import sip

from common.gen.voiceai.tenant.v1 import resources_pb2 as pb
from common.gen.voiceai.tenant.v1 import tenant_service_pb2 as svc
from tenant_svc.db.database import DatabaseSettings
from tenant_svc.telephony import NumberBinding
from tests.doubles.livekit_twirp import LiveKitDouble
from tests.integration.livekit_sip_harness import SipApi, fresh_number, meta, ours, sip_tenant_api


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
        await running.reconciled()
        yield running


async def status_of(call) -> tuple[grpc.StatusCode, str]:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value.code(), caught.value.details() or ""


def _update(phone: pb.PhoneNumber, **fields: str) -> svc.UpdatePhoneNumberRequest:
    changed = pb.PhoneNumber(name=phone.name, **fields)
    return svc.UpdatePhoneNumberRequest(
        phone_number=changed, update_mask=field_mask_pb2.FieldMask(paths=list(fields))
    )


async def test_create_update_delete_mirror_the_number_in_livekit(api: SipApi, double: LiveKitDouble) -> None:
    t = await api.new_tenant()
    await api.new_agent(t, "front-desk")
    await api.new_agent(t, "sales")
    phone = await api.new_number(t, pid="main")
    [trunk], [rule], _ = ours(double, t)
    assert trunk.name == rule.name == f"voiceai:{t}:main"
    assert list(trunk.numbers) == [phone.e164_number]
    assert list(rule.trunk_ids) == [trunk.sip_trunk_id]
    assert rule.rule.dispatch_rule_individual.room_prefix == f"call-{t}-"
    [dispatch] = rule.room_config.agents
    assert dispatch.agent_name == "voiceai-gateway"
    assert meta(dispatch) == meta(rule) == meta(trunk)
    assert meta(rule) | {"tenant_id": t, "agent_id": "front-desk", "e164_number": phone.e164_number} == meta(
        rule
    )
    assert rule.attributes["voiceai.tenant_id"] == t

    moved = await api.stub.UpdatePhoneNumber(
        _update(phone, agent=f"tenants/{t}/agents/sales"), metadata=api.md(t, "admin")
    )
    renumbered = await api.stub.UpdatePhoneNumber(
        _update(moved, e164_number=fresh_number()), metadata=api.md(t, "admin")
    )
    [trunk2], [rule2], _ = ours(double, t)
    assert (trunk2.sip_trunk_id, rule2.sip_dispatch_rule_id) == (
        trunk.sip_trunk_id,
        rule.sip_dispatch_rule_id,
    )
    assert list(trunk2.numbers) == [renumbered.e164_number]
    assert meta(rule2)["agent_id"] == "sales" and rule2.room_config.agents[0].metadata == rule2.metadata

    await api.stub.DeletePhoneNumber(
        svc.DeletePhoneNumberRequest(name=phone.name), metadata=api.md(t, "admin")
    )
    assert ours(double, t) == ([], [], [])


async def test_replays_change_nothing_and_finish_half_done_work(api: SipApi, double: LiveKitDouble) -> None:
    t = await api.new_tenant()
    await api.new_agent(t)
    phone = await api.new_number(t, pid="desk")
    before = ours(double, t)
    assert api.host is not None and api.host.telephony is not None
    provisioner = api.host.telephony.provisioner
    binding = NumberBinding.of(phone)
    assert await provisioner.apply(binding) == "unchanged"
    assert ours(double, t) == before
    again = svc.CreatePhoneNumberRequest(parent=f"tenants/{t}", phone_number=phone, phone_number_id="desk")
    code, _ = await status_of(api.stub.CreatePhoneNumber(again, metadata=api.md(t, "admin")))
    assert code == grpc.StatusCode.ALREADY_EXISTS and ours(double, t) == before

    # An earlier attempt died after the trunk: the replay adds the rule, no second trunk.
    [rule] = before[1]
    with double.lock:
        del double.rules[rule.sip_dispatch_rule_id]
    assert await provisioner.apply(binding) == "created"
    [trunk], [rule_again], _ = ours(double, t)
    assert trunk == before[0][0] and list(rule_again.trunk_ids) == [trunk.sip_trunk_id]

    assert await provisioner.remove(t, "desk") == 2
    assert await provisioner.remove(t, "desk") == 0


async def test_a_number_livekit_refuses_is_failed_precondition_and_nothing_changes(
    api: SipApi, double: LiveKitDouble
) -> None:
    t = await api.new_tenant()
    await api.new_agent(t)
    taken = fresh_number()
    with double.lock:  # a trunk someone else made by hand holds the number
        double.inbound["ST_carrier"] = sip.SIPInboundTrunkInfo(
            sip_trunk_id="ST_carrier", name="carrier", numbers=[taken]
        )
    request = svc.CreatePhoneNumberRequest(
        parent=f"tenants/{t}",
        phone_number=pb.PhoneNumber(e164_number=taken, agent=f"tenants/{t}/agents/front-desk"),
    )
    code, details = await status_of(api.stub.CreatePhoneNumber(request, metadata=api.md(t, "admin")))
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert "Conflicting inbound SIP Trunks" in details and "'ST_carrier'" in details
    listed = await api.stub.ListPhoneNumbers(
        svc.ListPhoneNumbersRequest(parent=f"tenants/{t}"), metadata=api.md(t, "viewer")
    )
    assert list(listed.phone_numbers) == [] and ours(double, t) == ([], [], [])

    phone = await api.new_number(t)
    code, details = await status_of(
        api.stub.UpdatePhoneNumber(_update(phone, e164_number=taken), metadata=api.md(t, "admin"))
    )
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "Conflicting inbound SIP Trunks" in details
    got = await api.stub.GetPhoneNumber(
        svc.GetPhoneNumberRequest(name=phone.name), metadata=api.md(t, "viewer")
    )
    assert got.e164_number == phone.e164_number
    assert list(ours(double, t)[0][0].numbers) == [phone.e164_number]
    with double.lock:
        assert double.inbound["ST_carrier"].name == "carrier"  # never touched
        del double.inbound["ST_carrier"]


async def test_a_conflicting_dispatch_rule_undoes_the_trunk_it_just_made(
    api: SipApi, double: LiveKitDouble
) -> None:
    t = await api.new_tenant()
    await api.new_agent(t)
    catch_all = sip.SIPDispatchRuleInfo(
        sip_dispatch_rule_id="SDR_catchall", name="catch-all",
        rule=sip.SIPDispatchRule(dispatch_rule_direct=sip.SIPDispatchRuleDirect(room_name="lobby")),
    )  # fmt: skip
    with double.lock:
        double.rules["SDR_catchall"] = catch_all
    try:
        code, details = await status_of(api.new_number(t))
    finally:
        with double.lock:
            del double.rules["SDR_catchall"]
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "Conflicting SIP Dispatch Rules" in details
    assert ours(double, t) == ([], [], [])


async def test_livekit_down_is_unavailable_and_leaves_no_drift(api: SipApi, double: LiveKitDouble) -> None:
    t = await api.new_tenant()
    await api.new_agent(t)
    phone = await api.new_number(t, pid="kept")
    provisioned = ours(double, t)

    double.stop()
    try:
        code, details = await status_of(api.new_number(t))
        assert code == grpc.StatusCode.UNAVAILABLE and "LiveKit is unreachable" in details
    finally:
        double.start()
    double.fail_next("CreateSIPDispatchRule", "internal", "database is locked", status=500)
    code, details = await status_of(api.new_number(t))
    assert code == grpc.StatusCode.UNAVAILABLE and "database is locked" in details
    assert ours(double, t) == provisioned  # the trunk made before the failure was removed again

    double.fail_next("DeleteSIPTrunk", "unavailable", "sip service restarting", status=503)
    code, details = await status_of(
        api.stub.DeletePhoneNumber(svc.DeletePhoneNumberRequest(name=phone.name), metadata=api.md(t, "admin"))
    )
    assert code == grpc.StatusCode.UNAVAILABLE and "sip service restarting" in details
    listed = await api.stub.ListPhoneNumbers(
        svc.ListPhoneNumbersRequest(parent=f"tenants/{t}"), metadata=api.md(t, "viewer")
    )
    assert [p.name for p in listed.phone_numbers] == [phone.name]
    [trunk], [rule], _ = ours(double, t)  # the rule deleted before the failure is back
    assert trunk == provisioned[0][0] and list(rule.trunk_ids) == [trunk.sip_trunk_id]


async def test_slow_livekit_within_the_timeout_still_provisions(api: SipApi, double: LiveKitDouble) -> None:
    t = await api.new_tenant()
    await api.new_agent(t)
    double.delay("CreateSIPInboundTrunk", 0.3)
    try:
        await api.new_number(t)
    finally:
        double.delay("CreateSIPInboundTrunk", 0)
    assert len(ours(double, t)[0]) == 1


async def test_deleting_a_tenant_removes_its_sip_objects(api: SipApi, double: LiveKitDouble) -> None:
    t = await api.new_tenant()
    await api.new_agent(t)
    await api.new_number(t)
    await api.new_number(t)
    assert len(ours(double, t)[0]) == 2
    await api.stub.DeleteTenant(
        svc.DeleteTenantRequest(name=f"tenants/{t}"), metadata=api.md(None, "platform")
    )
    assert ours(double, t) == ([], [], [])


async def test_wrong_credentials_fail_clearly_without_the_secret(
    database_settings: DatabaseSettings,
    key_dir: Path,
    double: LiveKitDouble,
    caplog: pytest.LogCaptureFixture,
) -> None:
    secret = "not-the-secret-but-long-enough-0123456789"
    caplog.set_level(logging.INFO)
    async with sip_tenant_api(database_settings, key_dir, double, api_secret=secret) as bad:
        t = await bad.new_tenant()
        await bad.new_agent(t)
        code, details = await status_of(bad.new_number(t))
        assert bad.host is not None and bad.host.telephony is not None
        assert bad.host.telephony.reconciler.runs == 0
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert "refused our credentials" in details and "LIVEKIT_API_SECRET" in details
    assert secret not in details and secret not in caplog.text
    assert "SIP reconcile failed" in caplog.text and "refused our credentials" in caplog.text
    assert ours(double, t) == ([], [], [])
