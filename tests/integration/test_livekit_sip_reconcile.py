"""tenant_svc reconciles LiveKit SIP with the database at start: missing objects are created,
drifted ones fixed, orphans with our tag deleted, and objects we did not create left alone."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from livekit.protocol import sip

from common.gen.voiceai.tenant.v1 import tenant_service_pb2 as svc
from tenant_svc.db.database import DatabaseSettings
from tests.doubles.livekit_twirp import LiveKitDouble
from tests.integration.livekit_sip_harness import fresh_number, new_number, ours, sip_tenant_api
from tests.integration.tenant_harness import tenant_api


async def test_start_creates_missing_fixes_drift_and_deletes_only_our_orphans(
    database_settings: DatabaseSettings, tmp_path_factory: pytest.TempPathFactory
) -> None:
    key_dir = Path(tmp_path_factory.mktemp("dev-auth"))
    with LiveKitDouble() as double:
        async with sip_tenant_api(database_settings, key_dir, double) as first:
            await first.reconciled()
            t = await first.new_tenant()
            await first.new_agent(t)
            drifted = await first.new_number(t, pid="drifted")
            orphan = await first.new_number(t, pid="orphan")
        # While tenant_svc is down: a number is added without LiveKit, one is deleted, and
        # someone edits our trunk and our rule by hand.
        async with tenant_api(database_settings, key_dir) as offline:
            missing = await new_number(offline, t, pid="missing")
            await offline.stub.DeletePhoneNumber(
                svc.DeletePhoneNumberRequest(name=orphan.name), metadata=offline.md(t, "admin")
            )
        [drifted_trunk] = [x for x in ours(double, t)[0] if x.name.endswith(":drifted")]
        with double.lock:
            drifted_trunk.numbers[:] = [fresh_number()]
            [rule] = [r for r in double.rules.values() if r.name == f"voiceai:{t}:drifted"]
            rule.room_config.agents[0].agent_name = "someone-elses-agent"
            # Not ours: no marker (a name alike by chance) and a carrier's own trunk.
            double.inbound["ST_lookalike"] = sip.SIPInboundTrunkInfo(
                sip_trunk_id="ST_lookalike", name=f"voiceai:{t}:gone", metadata="{}", numbers=[fresh_number()]
            )
            double.inbound["ST_carrier"] = sip.SIPInboundTrunkInfo(
                sip_trunk_id="ST_carrier", name="carrier-main", numbers=[fresh_number()]
            )
            # Ours by tag and marker, for a tenant that no longer has numbers.
            double.outbound["ST_oldout"] = sip.SIPOutboundTrunkInfo(
                sip_trunk_id="ST_oldout", name=f"voiceai:{t}x:@outbound", address="sip.carrier.test",
                metadata=json.dumps({"managed_by": "voiceai-mesh", "tag": "voiceai", "tenant_id": f"{t}x"}),
            )  # fmt: skip

        async with sip_tenant_api(database_settings, key_dir, double) as second:
            await second.reconciled()
            assert second.host is not None and second.host.telephony is not None
            report = second.host.telephony.reconciler.last
        assert report is not None and report.failed == []
        assert report.created >= 1 and report.updated >= 1 and report.deleted >= 3  # >=: other tests' numbers

        trunks, rules, _ = ours(double, t)
        by_name = {x.name: x for x in trunks if x.sip_trunk_id != "ST_lookalike"}
        assert sorted(by_name) == [f"voiceai:{t}:drifted", f"voiceai:{t}:missing"]
        assert list(by_name[f"voiceai:{t}:drifted"].numbers) == [drifted.e164_number]
        assert by_name[f"voiceai:{t}:drifted"].sip_trunk_id == drifted_trunk.sip_trunk_id  # fixed in place
        assert list(by_name[f"voiceai:{t}:missing"].numbers) == [missing.e164_number]
        assert sorted(r.name for r in rules) == sorted(by_name)
        [fixed] = [r for r in rules if r.name.endswith(":drifted")]
        assert fixed.sip_dispatch_rule_id == rule.sip_dispatch_rule_id
        assert fixed.room_config.agents[0].agent_name == "voiceai-gateway"
        with double.lock:
            assert {"ST_lookalike", "ST_carrier"} <= set(double.inbound)
            assert "ST_oldout" not in double.outbound


async def test_livekit_down_at_start_is_retried_and_later_drift_is_fixed(
    database_settings: DatabaseSettings, tmp_path_factory: pytest.TempPathFactory
) -> None:
    key_dir = Path(tmp_path_factory.mktemp("dev-auth"))
    double = LiveKitDouble().start()
    double.stop()  # the port is known, nothing listens yet
    try:
        async with sip_tenant_api(database_settings, key_dir, double, reconcile_interval_s=0.2) as api:
            assert api.host is not None and api.host.telephony is not None
            reconciler = api.host.telephony.reconciler
            await asyncio.sleep(0.3)
            assert reconciler.runs == 0  # still serving; the reconciler is backing off
            double.start()
            await api.reconciled(1)
            t = await api.new_tenant()
            await api.new_agent(t)
            await api.new_number(t, pid="desk")
            [rule] = ours(double, t)[1]
            with double.lock:
                del double.rules[rule.sip_dispatch_rule_id]
            await api.reconciled(reconciler.runs + 2)
            [back] = ours(double, t)[1]
            assert back.name == rule.name and back.sip_dispatch_rule_id != rule.sip_dispatch_rule_id
    finally:
        double.stop()
