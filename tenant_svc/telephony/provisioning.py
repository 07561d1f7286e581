"""The LiveKit SIP objects that mirror the tenants' phone numbers, and nothing else.

Each PhoneNumber is one inbound trunk (its number only) and one dispatch rule (that trunk; each
call in its own room; the gateway's agent dispatched with metadata naming tenant, agent and
number). Both are named ``<tag>:<tenant>:<phone_number_id>`` (the id, not the number, so a
number change updates them in place) and carry a JSON metadata marker; each tenant's outbound
trunk is ``<tag>:<tenant>:@outbound``. Every operation finds its objects by name and converges
them to what the database says, so a replay changes nothing and a half-done earlier attempt is
finished. Objects without our name prefix and marker are never changed or deleted.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from livekit import api
from livekit.protocol import agent_dispatch as ad
from livekit.protocol import room as lk_room
from livekit.protocol import sip
from prometheus_client import Counter

from common.errors import VoiceAIError
from common.gen.voiceai.tenant.v1 import resources_pb2 as pb
from tenant_svc.telephony.errors import livekit_call
from tenant_svc.telephony.settings import LiveKitSettings

log = logging.getLogger(__name__)

MARKER = "voiceai-mesh"
OUTBOUND = "@outbound"
CHANGES = Counter(
    "voiceai_sip_provisioning_changes_total",
    "LiveKit SIP objects created, updated or deleted by tenant_svc, by origin (rpc or reconcile)",
    ["origin", "action"],
)
_TRANSPORTS = {
    "auto": sip.SIP_TRANSPORT_AUTO,
    "udp": sip.SIP_TRANSPORT_UDP,
    "tcp": sip.SIP_TRANSPORT_TCP,
    "tls": sip.SIP_TRANSPORT_TLS,
}


@dataclass(frozen=True, slots=True)
class NumberBinding:
    """What LiveKit must know about one phone number."""

    tenant_id: str
    phone_number_id: str
    e164: str
    agent_id: str

    @classmethod
    def of(cls, phone: pb.PhoneNumber) -> NumberBinding:
        _, tenant, _, pid = phone.name.split("/")
        return cls(tenant, pid, phone.e164_number, phone.agent.rsplit("/", 1)[-1])


@dataclass
class ReconcileReport:
    """What one reconciliation changed, and what it could not fix (with LiveKit's reason)."""

    created: int = 0
    updated: int = 0
    deleted: int = 0
    unchanged: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)

    @property
    def drift(self) -> int:
        return self.created + self.updated + self.deleted


def _differs(actual: Any, want: Any, fields: Sequence[str]) -> bool:
    return any(getattr(actual, f) != getattr(want, f) for f in fields)


_TRUNK_FIELDS = ("numbers", "metadata", "allowed_addresses")
_RULE_FIELDS = ("rule", "trunk_ids", "metadata", "attributes", "room_config")
_OUTBOUND_FIELDS = ("numbers", "metadata", "address", "transport", "auth_username", "auth_password")


class SipProvisioner:
    """Creates, converges and removes the LiveKit SIP objects named after our phone numbers."""

    def __init__(self, lk: api.LiveKitAPI, settings: LiveKitSettings) -> None:
        self._lk = lk
        self._s = settings

    # -- names and desired objects ----------------------------------------------------------
    def key(self, tenant_id: str, phone_number_id: str) -> str:
        return f"{self._s.tag}:{tenant_id}:{phone_number_id}"

    def _metadata(self, tenant_id: str, **extra: str) -> str:
        return json.dumps({"managed_by": MARKER, "tag": self._s.tag, "tenant_id": tenant_id, **extra})

    def _binding_metadata(self, b: NumberBinding) -> str:
        return self._metadata(
            b.tenant_id, agent_id=b.agent_id, phone_number_id=b.phone_number_id, e164_number=b.e164
        )

    def is_ours(self, name: str, metadata: str) -> bool:
        if not name.startswith(f"{self._s.tag}:"):
            return False
        try:
            meta = json.loads(metadata)
        except ValueError:
            return False
        return isinstance(meta, dict) and meta.get("managed_by") == MARKER and meta.get("tag") == self._s.tag

    def _trunk(self, b: NumberBinding) -> sip.SIPInboundTrunkInfo:
        return sip.SIPInboundTrunkInfo(
            name=self.key(b.tenant_id, b.phone_number_id),
            metadata=self._binding_metadata(b),
            numbers=[b.e164],
            allowed_addresses=self._s.sip_inbound_allowed_addresses,
        )

    def _rule(self, b: NumberBinding, trunk_id: str) -> sip.SIPDispatchRuleInfo:
        meta = self._binding_metadata(b)
        individual = sip.SIPDispatchRuleIndividual(room_prefix=f"{self._s.room_prefix}{b.tenant_id}-")
        return sip.SIPDispatchRuleInfo(
            name=self.key(b.tenant_id, b.phone_number_id),
            metadata=meta,
            rule=sip.SIPDispatchRule(dispatch_rule_individual=individual),
            trunk_ids=[trunk_id],
            # On the SIP participant too, so the worker can route before any lookup.
            attributes={
                "voiceai.tenant_id": b.tenant_id,
                "voiceai.agent_id": b.agent_id,
                "voiceai.phone_number_id": b.phone_number_id,
            },
            room_config=lk_room.RoomConfiguration(
                agents=[ad.RoomAgentDispatch(agent_name=self._s.agent_name, metadata=meta)]
            ),
        )

    def _outbound(self, tenant_id: str, numbers: Sequence[str]) -> sip.SIPOutboundTrunkInfo:
        return sip.SIPOutboundTrunkInfo(
            name=self.key(tenant_id, OUTBOUND),
            metadata=self._metadata(tenant_id, kind="outbound"),
            address=self._s.sip_outbound_address,
            transport=_TRANSPORTS[self._s.sip_outbound_transport],
            numbers=sorted(numbers),
            auth_username=self._s.sip_outbound_auth_username,
            auth_password=self._s.sip_outbound_auth_password.get_secret_value(),
        )

    # -- reads ----------------------------------------------------------------------------
    async def _everything(self) -> tuple[list[Any], list[Any], list[Any]]:
        async with livekit_call("list SIP trunks and dispatch rules"):
            trunks = await self._lk.sip.list_inbound_trunk(sip.ListSIPInboundTrunkRequest())
            rules = await self._lk.sip.list_dispatch_rule(sip.ListSIPDispatchRuleRequest())
            outbound = await self._lk.sip.list_outbound_trunk(sip.ListSIPOutboundTrunkRequest())
        return list(trunks.items), list(rules.items), list(outbound.items)

    @staticmethod
    def _named(items: Iterable[Any], name: str) -> list[Any]:
        return [i for i in items if i.name == name]

    # -- one number -----------------------------------------------------------------------
    async def apply(self, b: NumberBinding, *, origin: str = "rpc") -> str:
        """Make LiveKit serve ``b``; returns "created", "updated" or "unchanged"."""
        trunks, rules, _ = await self._everything()
        key = self.key(b.tenant_id, b.phone_number_id)
        return await self._converge(b, self._named(trunks, key), self._named(rules, key), origin)

    async def _converge(self, b: NumberBinding, trunks: list[Any], rules: list[Any], origin: str) -> str:
        outcome = "unchanged"
        want = self._trunk(b)
        async with livekit_call(f"provision the SIP trunk for {b.e164}"):
            for extra in trunks[1:]:  # duplicates left by an interrupted earlier attempt
                await self._delete_trunk(extra.sip_trunk_id, origin)
            if not trunks:
                trunk = await self._lk.sip.create_inbound_trunk(sip.CreateSIPInboundTrunkRequest(trunk=want))
                CHANGES.labels(origin, "created").inc()
                outcome = "created"
            elif _differs(trunks[0], want, _TRUNK_FIELDS):
                trunk = await self._lk.sip.update_inbound_trunk(trunks[0].sip_trunk_id, want)
                CHANGES.labels(origin, "updated").inc()
                outcome = "updated"
            else:
                trunk = trunks[0]
        want_rule = self._rule(b, trunk.sip_trunk_id)
        async with livekit_call(f"provision the SIP dispatch rule for {b.e164}"):
            for extra in rules[1:]:
                await self._delete_rule(extra.sip_dispatch_rule_id, origin)
            if not rules:
                await self._lk.sip.create_dispatch_rule(
                    sip.CreateSIPDispatchRuleRequest(dispatch_rule=want_rule)
                )
                CHANGES.labels(origin, "created").inc()
                outcome = "created"
            elif _differs(rules[0], want_rule, _RULE_FIELDS):
                await self._lk.sip.update_dispatch_rule(rules[0].sip_dispatch_rule_id, want_rule)
                CHANGES.labels(origin, "updated").inc()
                outcome = outcome if outcome == "created" else "updated"
        return outcome

    async def remove(self, tenant_id: str, phone_number_id: str, *, origin: str = "rpc") -> int:
        """Delete the number's rule and trunk; returns how many objects went (0 on a replay)."""
        trunks, rules, _ = await self._everything()
        key = self.key(tenant_id, phone_number_id)
        return await self._remove(self._named(rules, key), self._named(trunks, key), origin)

    async def _remove(self, rules: Iterable[Any], trunks: Iterable[Any], origin: str) -> int:
        gone = 0
        async with livekit_call("remove SIP trunks and dispatch rules"):
            for r in rules:  # rules first: a rule never points at a missing trunk
                gone += await self._delete_rule(r.sip_dispatch_rule_id, origin)
            for t in trunks:
                gone += await self._delete_trunk(t.sip_trunk_id, origin)
        return gone

    async def _delete_rule(self, rule_id: str, origin: str) -> int:
        try:
            await self._lk.sip.delete_dispatch_rule(
                sip.DeleteSIPDispatchRuleRequest(sip_dispatch_rule_id=rule_id)
            )
        except api.ServerError as e:
            if e.code == "not_found":  # gone already: what we wanted
                return 0
            raise
        CHANGES.labels(origin, "deleted").inc()
        return 1

    async def _delete_trunk(self, trunk_id: str, origin: str) -> int:
        try:
            await self._lk.sip.delete_trunk(sip.DeleteSIPTrunkRequest(sip_trunk_id=trunk_id))
        except api.ServerError as e:
            if e.code == "not_found":
                return 0
            raise
        CHANGES.labels(origin, "deleted").inc()
        return 1

    async def remove_tenant(self, tenant_id: str) -> int:
        """Delete every object of ours named for ``tenant_id`` (its numbers and outbound trunk)."""
        trunks, rules, outbound = await self._everything()
        prefix = f"{self._s.tag}:{tenant_id}:"

        def mine(items: list[Any]) -> list[Any]:
            return [i for i in items if i.name.startswith(prefix) and self.is_ours(i.name, i.metadata)]

        return await self._remove(mine(rules), [*mine(trunks), *mine(outbound)], "rpc")

    # -- outbound -------------------------------------------------------------------------
    async def outbound_trunk(self, tenant_id: str, numbers: Sequence[str]) -> str:
        """The tenant's outbound trunk id, created or converged to list exactly ``numbers``."""
        async with livekit_call("list SIP outbound trunks"):
            items = (await self._lk.sip.list_outbound_trunk(sip.ListSIPOutboundTrunkRequest())).items
        found = self._named(items, self.key(tenant_id, OUTBOUND))
        want = self._outbound(tenant_id, numbers)
        async with livekit_call("provision the tenant's SIP outbound trunk"):
            for extra in found[1:]:
                await self._delete_trunk(extra.sip_trunk_id, "rpc")
            if not found:
                made = await self._lk.sip.create_outbound_trunk(sip.CreateSIPOutboundTrunkRequest(trunk=want))
                CHANGES.labels("rpc", "created").inc()
                return made.sip_trunk_id
            if _differs(found[0], want, _OUTBOUND_FIELDS):
                await self._lk.sip.update_outbound_trunk(found[0].sip_trunk_id, want)
                CHANGES.labels("rpc", "updated").inc()
            return str(found[0].sip_trunk_id)

    # -- everything -----------------------------------------------------------------------
    async def reconcile(self, bindings: Iterable[NumberBinding]) -> ReconcileReport:
        """Converge LiveKit to ``bindings`` (every number of every tenant): create what is
        missing, fix what drifted, delete our objects that no number accounts for."""
        trunks, rules, outbound = await self._everything()
        by_name: dict[str, tuple[list[Any], list[Any]]] = defaultdict(lambda: ([], []))
        for t in trunks:
            by_name[t.name][0].append(t)
        for r in rules:
            by_name[r.name][1].append(r)
        report = ReconcileReport()
        wanted: set[str] = set()
        tenants_with_numbers: set[str] = set()
        for b in bindings:
            key = self.key(b.tenant_id, b.phone_number_id)
            wanted.add(key)
            tenants_with_numbers.add(b.tenant_id)
            found_trunks, found_rules = by_name.get(key, ([], []))
            try:
                outcome = await self._converge(b, found_trunks, found_rules, "reconcile")
            except VoiceAIError as e:
                report.failed.append((key, e.message))
                log.warning("SIP reconcile could not converge %s: %s", key, e.message)
                continue
            setattr(report, outcome, getattr(report, outcome) + 1)
        for name, (found_trunks, found_rules) in by_name.items():
            if name in wanted:
                continue
            orphans_t = [t for t in found_trunks if self.is_ours(t.name, t.metadata)]
            orphans_r = [r for r in found_rules if self.is_ours(r.name, r.metadata)]
            report.deleted += await self._remove(orphans_r, orphans_t, "reconcile")
        # An outbound trunk whose tenant has no number left (or no longer exists) is an orphan;
        # the others are converged when the tenant next places a call.
        stale = [
            o for o in outbound
            if self.is_ours(o.name, o.metadata) and o.name.split(":")[1] not in tenants_with_numbers
        ]  # fmt: skip
        report.deleted += await self._remove((), stale, "reconcile")
        return report
