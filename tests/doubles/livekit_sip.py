"""The LiveKit double's SIP service: trunks, dispatch rules, outbound calls and transfers, with
LiveKit's conflict checks and scripted call outcomes (see ``livekit_twirp``)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import Message
from livekit.protocol import models, sip

from tests.doubles.livekit_rooms import RoomState, TwirpFailure


@dataclass
class DialScript:
    """How the callee at one number behaves: rings, then answers or fails with a SIP status."""

    ring_after_s: float = 0.02
    answer_after_s: float = 0.05
    sip_status: tuple[int, str] | None = None  # e.g. (486, "Busy Here"): the call fails with it
    hangup_after_s: float | None = None  # the callee hangs up this long after answering


@dataclass
class TransferScript:
    """How a transfer to one destination ends."""

    after_s: float = 0.02
    sip_status: tuple[int, str] | None = None  # fails with it (error metadata, like LiveKit)
    reason: str = "STR_REJECTED"


_SIP_FAILURE_CODES = {404: "not_found", 484: "not_found", 408: "deadline_exceeded", 480: "deadline_exceeded"}


class SipState(RoomState):
    """SIP trunks, dispatch rules, dial and transfer scripts, on top of the rooms."""

    def __init__(self) -> None:
        super().__init__()
        self.inbound: dict[str, sip.SIPInboundTrunkInfo] = {}
        self.outbound: dict[str, sip.SIPOutboundTrunkInfo] = {}
        self.rules: dict[str, sip.SIPDispatchRuleInfo] = {}
        self.dial_scripts: dict[str, DialScript] = {}
        self.transfer_scripts: dict[str, TransferScript] = {}
        self.transfers: list[sip.TransferSIPParticipantRequest] = []

    def script_dial(self, number: str, script: DialScript) -> None:
        with self.lock:
            self.dial_scripts[number] = script

    def script_transfer(self, transfer_to: str, script: TransferScript) -> None:
        with self.lock:
            self.transfer_scripts[transfer_to] = script

    # -- SIP trunks -----------------------------------------------------------------------
    def _check_numbers(self, trunk: sip.SIPInboundTrunkInfo) -> None:
        for other in self.inbound.values():
            if other.sip_trunk_id == trunk.sip_trunk_id or other.allowed_numbers or trunk.allowed_numbers:
                continue
            shared = sorted(set(other.numbers) & set(trunk.numbers))
            if shared:
                raise TwirpFailure(
                    "invalid_argument",
                    f"Conflicting inbound SIP Trunks: {other.sip_trunk_id!r} and {trunk.sip_trunk_id or '<new>'!r},"
                    f" using the same number(s) {shared} without AllowedNumbers set",
                )

    def _create_inbound(self, req: sip.CreateSIPInboundTrunkRequest, claims: dict[str, Any]) -> Message:
        self._sip_grant(claims, "admin")
        with self.lock:
            trunk = sip.SIPInboundTrunkInfo()
            trunk.CopyFrom(req.trunk)
            if trunk.sip_trunk_id:
                raise TwirpFailure("invalid_argument", "trunk ID must not be set")
            self._check_numbers(trunk)
            trunk.sip_trunk_id = self._id("ST_")
            trunk.created_at.GetCurrentTime()
            self.inbound[trunk.sip_trunk_id] = trunk
            return trunk

    def _update_inbound(self, req: sip.UpdateSIPInboundTrunkRequest, claims: dict[str, Any]) -> Message:
        self._sip_grant(claims, "admin")
        with self.lock:
            stored = self.inbound.get(req.sip_trunk_id)
            if stored is None:
                raise TwirpFailure("not_found", "requested sip trunk does not exist")
            trunk = _updated(stored, req.replace if req.HasField("replace") else None, req.update)
            trunk.sip_trunk_id = stored.sip_trunk_id
            self._check_numbers(trunk)
            trunk.updated_at.GetCurrentTime()
            self.inbound[trunk.sip_trunk_id] = trunk
            return trunk

    def _list_inbound(self, req: sip.ListSIPInboundTrunkRequest, claims: dict[str, Any]) -> Message:
        self._sip_grant(claims, "admin")
        with self.lock:
            items = [
                t for t in self.inbound.values()
                if (not req.trunk_ids or t.sip_trunk_id in req.trunk_ids)
                and (not req.numbers or set(req.numbers) & set(t.numbers))
            ]  # fmt: skip
            return sip.ListSIPInboundTrunkResponse(items=items)

    def _create_outbound(self, req: sip.CreateSIPOutboundTrunkRequest, claims: dict[str, Any]) -> Message:
        self._sip_grant(claims, "admin")
        with self.lock:
            trunk = sip.SIPOutboundTrunkInfo()
            trunk.CopyFrom(req.trunk)
            if not trunk.address:
                raise TwirpFailure("invalid_argument", "no trunk address specified")
            trunk.sip_trunk_id = self._id("ST_")
            trunk.created_at.GetCurrentTime()
            self.outbound[trunk.sip_trunk_id] = trunk
            return trunk

    def _update_outbound(self, req: sip.UpdateSIPOutboundTrunkRequest, claims: dict[str, Any]) -> Message:
        self._sip_grant(claims, "admin")
        with self.lock:
            stored = self.outbound.get(req.sip_trunk_id)
            if stored is None:
                raise TwirpFailure("not_found", "requested sip trunk does not exist")
            trunk = _updated(stored, req.replace if req.HasField("replace") else None, req.update)
            trunk.sip_trunk_id = stored.sip_trunk_id
            trunk.updated_at.GetCurrentTime()
            self.outbound[trunk.sip_trunk_id] = trunk
            return trunk

    def _list_outbound(self, req: sip.ListSIPOutboundTrunkRequest, claims: dict[str, Any]) -> Message:
        self._sip_grant(claims, "admin")
        with self.lock:
            items = [
                t for t in self.outbound.values()
                if (not req.trunk_ids or t.sip_trunk_id in req.trunk_ids)
                and (not req.numbers or set(req.numbers) & set(t.numbers))
            ]  # fmt: skip
            return sip.ListSIPOutboundTrunkResponse(items=items)

    def _delete_trunk(self, req: sip.DeleteSIPTrunkRequest, claims: dict[str, Any]) -> Message:
        self._sip_grant(claims, "admin")
        with self.lock:
            gone = self.inbound.pop(req.sip_trunk_id, None) or self.outbound.pop(req.sip_trunk_id, None)
            if gone is None:
                raise TwirpFailure("not_found", "requested sip trunk does not exist")
            return sip.SIPTrunkInfo(sip_trunk_id=req.sip_trunk_id, name=gone.name, metadata=gone.metadata)

    # -- dispatch rules -------------------------------------------------------------------
    def _check_rule(self, rule: sip.SIPDispatchRuleInfo) -> None:
        def pin(r: sip.SIPDispatchRuleInfo) -> str:
            which = r.rule.WhichOneof("rule")
            return getattr(getattr(r.rule, which), "pin", "") if which else ""

        for other in self.rules.values():
            if other.sip_dispatch_rule_id == rule.sip_dispatch_rule_id or pin(other) != pin(rule):
                continue
            trunks = not other.trunk_ids or not rule.trunk_ids or set(other.trunk_ids) & set(rule.trunk_ids)
            numbers = (
                not other.inbound_numbers or not rule.inbound_numbers
                or set(other.inbound_numbers) & set(rule.inbound_numbers)
            )  # fmt: skip
            if trunks and numbers:
                raise TwirpFailure(
                    "invalid_argument",
                    f"Conflicting SIP Dispatch Rules: same Trunk+Number+PIN combination for"
                    f" {other.sip_dispatch_rule_id!r} and {rule.sip_dispatch_rule_id or '<new>'!r}",
                )

    def _create_rule(self, req: sip.CreateSIPDispatchRuleRequest, claims: dict[str, Any]) -> Message:
        self._sip_grant(claims, "admin")
        with self.lock:
            rule = sip.SIPDispatchRuleInfo()
            if req.HasField("dispatch_rule"):
                rule.CopyFrom(req.dispatch_rule)
            else:  # the older flat form of the request
                rule.rule.CopyFrom(req.rule)
                rule.trunk_ids.extend(req.trunk_ids)
                rule.inbound_numbers.extend(req.inbound_numbers)
                rule.hide_phone_number, rule.name, rule.metadata = (
                    req.hide_phone_number,
                    req.name,
                    req.metadata,
                )
                rule.attributes.update(req.attributes)
                rule.room_config.CopyFrom(req.room_config)
            if not rule.rule.WhichOneof("rule"):
                raise TwirpFailure("invalid_argument", "dispatch rule type is required")
            self._check_rule(rule)
            rule.sip_dispatch_rule_id = self._id("SDR_")
            rule.created_at.GetCurrentTime()
            self.rules[rule.sip_dispatch_rule_id] = rule
            return rule

    def _update_rule(self, req: sip.UpdateSIPDispatchRuleRequest, claims: dict[str, Any]) -> Message:
        self._sip_grant(claims, "admin")
        with self.lock:
            stored = self.rules.get(req.sip_dispatch_rule_id)
            if stored is None:
                raise TwirpFailure("not_found", "requested sip dispatch rule does not exist")
            rule = _updated(stored, req.replace if req.HasField("replace") else None, req.update)
            rule.sip_dispatch_rule_id = stored.sip_dispatch_rule_id
            self._check_rule(rule)
            rule.updated_at.GetCurrentTime()
            self.rules[rule.sip_dispatch_rule_id] = rule
            return rule

    def _list_rules(self, req: sip.ListSIPDispatchRuleRequest, claims: dict[str, Any]) -> Message:
        self._sip_grant(claims, "admin")
        with self.lock:
            items = [
                r for r in self.rules.values()
                if (not req.dispatch_rule_ids or r.sip_dispatch_rule_id in req.dispatch_rule_ids)
                and (not req.trunk_ids or set(req.trunk_ids) & set(r.trunk_ids))
            ]  # fmt: skip
            return sip.ListSIPDispatchRuleResponse(items=items)

    def _delete_rule(self, req: sip.DeleteSIPDispatchRuleRequest, claims: dict[str, Any]) -> Message:
        self._sip_grant(claims, "admin")
        with self.lock:
            gone = self.rules.pop(req.sip_dispatch_rule_id, None)
            if gone is None:
                raise TwirpFailure("not_found", "requested sip dispatch rule does not exist")
            return gone

    # -- calls ----------------------------------------------------------------------------
    async def _create_sip_participant(
        self, req: sip.CreateSIPParticipantRequest, claims: dict[str, Any]
    ) -> Message:
        self._sip_grant(claims, "call")
        with self.lock:
            if not req.sip_call_to or not req.room_name:
                raise TwirpFailure("invalid_argument", "call-to number and room name are required")
            if not req.HasField("trunk") and req.sip_trunk_id not in self.outbound:
                raise TwirpFailure("not_found", "requested sip trunk does not exist")
            identity = req.participant_identity or f"sip_{req.sip_call_to}"
            attrs = dict(req.participant_attributes)
            attrs.update({
                "sip.callStatus": "dialing", "sip.phoneNumber": req.sip_call_to,
                "sip.trunkID": req.sip_trunk_id, "sip.callID": self._id("SCL_"),
            })  # fmt: skip
            p = self.add_participant(req.room_name, identity, attributes=attrs)
            p.metadata, p.name = req.participant_metadata, req.participant_name
            script = self.dial_scripts.get(req.sip_call_to, DialScript())
            info = sip.SIPParticipantInfo(
                participant_id=p.sid, participant_identity=identity, room_name=req.room_name,
                sip_call_id=attrs["sip.callID"],
            )  # fmt: skip
        outcome = self._spawn(self._dial(req.room_name, identity, script))
        if req.wait_until_answered:
            failure = await asyncio.shield(outcome)
            if failure is not None:
                raise failure
        return info

    def _set_status(self, room_name: str, identity: str, status: str) -> bool:
        with self.lock:
            p = self.participants.get(room_name, {}).get(identity)
            if p is None:
                return False
            p.attributes["sip.callStatus"] = status
            return True

    async def _dial(self, room_name: str, identity: str, script: DialScript) -> TwirpFailure | None:
        await asyncio.sleep(script.ring_after_s)
        if not self._set_status(room_name, identity, "ringing"):
            return TwirpFailure("canceled", "the call was cancelled")
        await asyncio.sleep(max(0.0, script.answer_after_s - script.ring_after_s))
        if script.sip_status is not None:
            code, reason = script.sip_status
            self.hang_up(room_name, identity)
            return TwirpFailure(
                _SIP_FAILURE_CODES.get(code, "failed_precondition"), f"sip status: {code}: {reason}",
                {"sip_status_code": str(code), "sip_status": reason},
            )  # fmt: skip
        if not self._set_status(room_name, identity, "active"):
            return TwirpFailure("canceled", "the call was cancelled")
        if script.hangup_after_s is not None:
            self._spawn(self._hang_up_later(room_name, identity, script.hangup_after_s))
        return None

    async def _hang_up_later(self, room_name: str, identity: str, after_s: float) -> None:
        await asyncio.sleep(after_s)
        self._set_status(room_name, identity, "hangup")
        self.hang_up(room_name, identity)

    async def _transfer(self, req: sip.TransferSIPParticipantRequest, claims: dict[str, Any]) -> Message:
        self._sip_grant(claims, "call")
        self._video_grant(claims, "roomAdmin", req.room_name)
        with self.lock:
            p = self.participants.get(req.room_name, {}).get(req.participant_identity)
            if p is None:
                raise TwirpFailure("not_found", "participant not found")
            if p.kind != models.ParticipantInfo.SIP:
                raise TwirpFailure("failed_precondition", "participant is not a SIP participant")
            if not req.transfer_to:
                raise TwirpFailure("invalid_argument", "transfer_to is required")
            self.transfers.append(req)
            script = self.transfer_scripts.get(req.transfer_to, TransferScript())
            transfer_id = self._id("STR_")
        self._set_status(req.room_name, req.participant_identity, "active")
        await asyncio.sleep(script.after_s)
        if script.sip_status is not None:
            code, reason = script.sip_status
            raise TwirpFailure(
                "failed_precondition", f"transfer failed: {code} {reason}",
                {"sip_status_code": str(code), "sip_status": reason,
                 "sip_transfer_reason": script.reason, "sip_transfer_id": transfer_id},
            )  # fmt: skip
        self.hang_up(req.room_name, req.participant_identity)
        return sip.TransferSIPParticipantResponse(
            transfer_id=transfer_id, status=sip.STS_TRANSFER_SUCCESSFUL, reason=sip.STR_COMPLETED,
            sip_status=sip.SIPStatus(code=200, status="OK"),  # type: ignore[arg-type]
        )  # fmt: skip


def _updated(stored: Any, replace: Any | None, update: Message) -> Any:
    """Apply a Replace (whole message) or an Update (set fields; ListUpdate for lists)."""
    out = type(stored)()
    out.CopyFrom(replace if replace is not None else stored)
    if replace is not None:
        out.created_at.CopyFrom(stored.created_at)
        return out
    for fd, value in update.ListFields():
        target = getattr(out, fd.name)
        if isinstance(value, models.ListUpdate):
            items = [] if value.clear else list(value.set) if value.set else list(target)
            items = [i for i in items if i not in value.remove] + [i for i in value.add if i not in items]
            del target[:]
            target.extend(items)
        elif fd.message_type is not None and fd.message_type.GetOptions().map_entry:
            target.update(value)
        elif fd.message_type is not None:
            target.CopyFrom(value)
        else:
            setattr(out, fd.name, value)
    return out
