"""A double of LiveKit's server API (Twirp over HTTP), for tests only: a real HTTP server on loopback.

It answers what the ``livekit-api`` client sends: ``POST /twirp/livekit.<Service>/<Method>`` with a
protobuf body (``application/protobuf``; Twirp JSON, ``application/json``, is understood too), and
replies in the same encoding; errors are Twirp JSON ``{"code", "msg", "meta"}`` with Twirp's HTTP
statuses. Services: ``livekit.SIP`` (inbound/outbound trunks, dispatch rules, CreateSIPParticipant,
TransferSIPParticipant), ``livekit.RoomService`` (CreateRoom, DeleteRoom, ListRooms,
ListParticipants, GetParticipant, RemoveParticipant) and ``livekit.AgentDispatchService``
(CreateDispatch, ListDispatch, DeleteDispatch).

Every request must carry ``Authorization: Bearer <JWT>``: HS256, signed with the API secret, ``iss``
the API key, not expired, with the grants LiveKit checks for the method (``video.roomCreate``,
``roomList``, ``roomAdmin`` for the named room, ``sip.admin``, ``sip.call``). A bad or missing
token is ``unauthenticated`` (401), a missing grant ``permission_denied`` (403), as LiveKit does.

Like LiveKit, the double refuses an inbound trunk whose number another inbound trunk already has,
and a dispatch rule that matches the same trunk + number + PIN as another (both
``invalid_argument``, with LiveKit's wording). Outbound calls follow a per-number script
(:class:`DialScript`): the SIP participant joins at once with ``sip.callStatus`` = ``dialing``, then
``ringing``, then ``active`` or leaves with a SIP status; with ``wait_until_answered`` the request
returns on answer or fails with ``sip_status_code``/``sip_status`` in the error metadata (the Twirp
code chosen per status is this double's). Transfers follow a per-destination
:class:`TransferScript`; a completed transfer takes the SIP participant out of the room.

Fault injection: :meth:`LiveKitDouble.fail_next` (any Twirp code/status/meta, N times, for one
method or all), :meth:`LiveKitDouble.delay` (slow answers), :meth:`stop` / :meth:`start` (gone and
back on the same port). The server runs on its own thread and event loop, so any test (sync or
async, any loop scope) can use it; the test reads state under :attr:`lock`.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import jwt
from aiohttp import web
from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message
from livekit.protocol import agent_dispatch as ad
from livekit.protocol import models, room, sip

_STATUS = {
    "canceled": 408, "unknown": 500, "invalid_argument": 400, "malformed": 400,
    "deadline_exceeded": 408, "not_found": 404, "bad_route": 404, "already_exists": 409,
    "permission_denied": 403, "unauthenticated": 401, "resource_exhausted": 429,
    "failed_precondition": 412, "aborted": 409, "out_of_range": 400, "unimplemented": 501,
    "internal": 500, "unavailable": 503, "dataloss": 500,
}  # fmt: skip


class TwirpFailure(Exception):
    """A Twirp error the double answers with."""

    def __init__(self, code: str, msg: str, meta: dict[str, str] | None = None, status: int = 0) -> None:
        super().__init__(msg)
        self.code, self.msg, self.meta = code, msg, meta or {}
        self.status = status or _STATUS.get(code, 500)


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


@dataclass
class Seen:
    """One request as the double decoded it (after authentication)."""

    service: str
    method: str
    request: Message
    claims: dict[str, Any]
    at: float = field(default_factory=time.monotonic)


_SIP_FAILURE_CODES = {404: "not_found", 484: "not_found", 408: "deadline_exceeded", 480: "deadline_exceeded"}


class LiveKitDouble:
    """One LiveKit server's API (one API key) with SIP, rooms and agent dispatch, in memory."""

    def __init__(
        self, api_key: str = "APIdouble", api_secret: str = "double-secret-0123456789abcdef-0123456789"
    ) -> None:
        self.api_key, self.api_secret = api_key, api_secret
        self.lock = threading.RLock()
        self.inbound: dict[str, sip.SIPInboundTrunkInfo] = {}
        self.outbound: dict[str, sip.SIPOutboundTrunkInfo] = {}
        self.rules: dict[str, sip.SIPDispatchRuleInfo] = {}
        self.rooms: dict[str, models.Room] = {}
        self.participants: dict[str, dict[str, models.ParticipantInfo]] = {}
        self.dispatches: dict[str, list[ad.AgentDispatch]] = {}
        self.dial_scripts: dict[str, DialScript] = {}
        self.transfer_scripts: dict[str, TransferScript] = {}
        self.transfers: list[sip.TransferSIPParticipantRequest] = []
        self.seen: list[Seen] = []
        self._faults: list[tuple[str, TwirpFailure, list[int]]] = []
        self._delays: dict[str, float] = {}
        self._ids = itertools.count(1)
        self._port = 0
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._handlers: dict[tuple[str, str], tuple[type[Message], Callable[..., Any]]] = {}
        self._register()

    # -- lifecycle ------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    def start(self) -> LiveKitDouble:
        ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, args=(ready,), name="livekit-double", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the LiveKit double did not start")
        return self

    def stop(self) -> None:
        """Close the server and drop open connections; the state stays (``start`` again to return)."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        self._loop = self._thread = None

    def __enter__(self) -> LiveKitDouble:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    def _serve(self, ready: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        app = web.Application()
        app.router.add_post("/twirp/livekit.{service}/{method}", self._handle)
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.1)
        loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", self._port, reuse_address=True)
        loop.run_until_complete(site.start())
        server = getattr(site, "_server", None)
        self._port = server.sockets[0].getsockname()[1] if server is not None else self._port
        ready.set()
        try:
            loop.run_forever()
        finally:
            for task in list(self._tasks):
                task.cancel()
            loop.run_until_complete(self._runner.cleanup())
            loop.close()

    # -- test controls --------------------------------------------------------------------
    def fail_next(
        self, method: str = "*", code: str = "unavailable", msg: str = "injected failure", *,
        times: int = 1, meta: dict[str, str] | None = None, status: int = 0,
    ) -> None:  # fmt: skip
        """The next ``times`` calls of ``method`` (``*`` = any) fail with this Twirp error."""
        with self.lock:
            self._faults.append((method, TwirpFailure(code, msg, meta, status), [times]))

    def delay(self, method: str, seconds: float) -> None:
        """Answer ``method`` (``*`` = any) only after ``seconds``."""
        with self.lock:
            self._delays[method] = seconds

    def script_dial(self, number: str, script: DialScript) -> None:
        with self.lock:
            self.dial_scripts[number] = script

    def script_transfer(self, transfer_to: str, script: TransferScript) -> None:
        with self.lock:
            self.transfer_scripts[transfer_to] = script

    def add_participant(
        self, room_name: str, identity: str, *, kind: int = models.ParticipantInfo.SIP,
        attributes: dict[str, str] | None = None,
    ) -> models.ParticipantInfo:  # fmt: skip
        """Put a participant (a SIP caller by default) in a room, creating the room if needed."""
        with self.lock:
            self._room(room_name)
            p = models.ParticipantInfo(
                sid=self._id("PA_"), identity=identity, kind=kind,  # type: ignore[arg-type]
                state=models.ParticipantInfo.ACTIVE, joined_at=int(time.time()), attributes=attributes or {},
            )  # fmt: skip
            self.participants[room_name][identity] = p
            return p

    def hang_up(self, room_name: str, identity: str) -> None:
        with self.lock:
            self.participants.get(room_name, {}).pop(identity, None)

    def calls(self, method: str) -> list[Seen]:
        with self.lock:
            return [s for s in self.seen if s.method == method]

    # -- the HTTP side --------------------------------------------------------------------
    async def _handle(self, request: web.Request) -> web.Response:
        service, method = request.match_info["service"], request.match_info["method"]
        entry = self._handlers.get((service, method))
        as_json = request.content_type == "application/json"
        if entry is None:
            return _error(TwirpFailure("bad_route", f"no handler for livekit.{service}/{method}"))
        req_type, handler = entry
        body = await request.read()
        try:
            msg = json_format.Parse(body, req_type()) if as_json else req_type.FromString(body)
        except (DecodeError, json_format.ParseError) as e:
            return _error(TwirpFailure("malformed", f"the request could not be decoded: {e}"))
        try:
            claims = self._verify(request.headers.get("Authorization", ""))
            with self.lock:
                self.seen.append(Seen(service, method, msg, claims))
                pause = self._delays.get(method, self._delays.get("*", 0.0))
                self._injected(method)
            if pause:
                await asyncio.sleep(pause)
            result = handler(msg, claims)
            if asyncio.iscoroutine(result):
                result = await result
        except TwirpFailure as f:
            return _error(f)
        if as_json:
            return web.Response(
                body=json_format.MessageToJson(result).encode(), content_type="application/json"
            )
        return web.Response(body=result.SerializeToString(), content_type="application/protobuf")

    def _injected(self, method: str) -> None:
        for i, (target, failure, left) in enumerate(self._faults):
            if target in ("*", method):
                left[0] -= 1
                if left[0] <= 0:
                    del self._faults[i]
                raise failure

    def _verify(self, header: str) -> dict[str, Any]:
        if not header.startswith("Bearer "):
            raise TwirpFailure("unauthenticated", "no authorization token")
        token = header[len("Bearer ") :]
        try:
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError as e:
            raise TwirpFailure("unauthenticated", f"invalid token: {e}") from e
        if unverified.get("iss") != self.api_key:
            raise TwirpFailure("unauthenticated", "invalid API key")
        try:
            return jwt.decode(
                token, self.api_secret, algorithms=["HS256"], issuer=self.api_key,
                options={"require": ["exp"]}, leeway=10,
            )  # fmt: skip
        except jwt.PyJWTError as e:
            raise TwirpFailure("unauthenticated", f"invalid token: {e}") from e

    def _register(self) -> None:
        r = self._handlers
        Route = tuple[str, type[Message], Callable[..., Any]]
        sip_routes: list[Route] = [
            ("CreateSIPInboundTrunk", sip.CreateSIPInboundTrunkRequest, self._create_inbound),
            ("UpdateSIPInboundTrunk", sip.UpdateSIPInboundTrunkRequest, self._update_inbound),
            ("ListSIPInboundTrunk", sip.ListSIPInboundTrunkRequest, self._list_inbound),
            ("CreateSIPOutboundTrunk", sip.CreateSIPOutboundTrunkRequest, self._create_outbound),
            ("UpdateSIPOutboundTrunk", sip.UpdateSIPOutboundTrunkRequest, self._update_outbound),
            ("ListSIPOutboundTrunk", sip.ListSIPOutboundTrunkRequest, self._list_outbound),
            ("DeleteSIPTrunk", sip.DeleteSIPTrunkRequest, self._delete_trunk),
            ("CreateSIPDispatchRule", sip.CreateSIPDispatchRuleRequest, self._create_rule),
            ("UpdateSIPDispatchRule", sip.UpdateSIPDispatchRuleRequest, self._update_rule),
            ("ListSIPDispatchRule", sip.ListSIPDispatchRuleRequest, self._list_rules),
            ("DeleteSIPDispatchRule", sip.DeleteSIPDispatchRuleRequest, self._delete_rule),
            ("CreateSIPParticipant", sip.CreateSIPParticipantRequest, self._create_sip_participant),
            ("TransferSIPParticipant", sip.TransferSIPParticipantRequest, self._transfer),
        ]
        room_routes: list[Route] = [
            ("CreateRoom", room.CreateRoomRequest, self._create_room),
            ("ListRooms", room.ListRoomsRequest, self._list_rooms),
            ("DeleteRoom", room.DeleteRoomRequest, self._delete_room),
            ("ListParticipants", room.ListParticipantsRequest, self._list_participants),
            ("GetParticipant", room.RoomParticipantIdentity, self._get_participant),
            ("RemoveParticipant", room.RoomParticipantIdentity, self._remove_participant),
        ]
        for service, routes in (("SIP", sip_routes), ("RoomService", room_routes)):
            for name, req, fn in routes:
                r[(service, name)] = (req, fn)
        r[("AgentDispatchService", "CreateDispatch")] = (ad.CreateAgentDispatchRequest, self._create_dispatch)
        r[("AgentDispatchService", "ListDispatch")] = (ad.ListAgentDispatchRequest, self._list_dispatch)
        r[("AgentDispatchService", "DeleteDispatch")] = (ad.DeleteAgentDispatchRequest, self._delete_dispatch)

    # -- grants ---------------------------------------------------------------------------
    @staticmethod
    def _sip_grant(claims: dict[str, Any], grant: str) -> None:
        if not claims.get("sip", {}).get(grant):
            raise TwirpFailure("permission_denied", f"permissions denied: requires SIP {grant} grant")

    @staticmethod
    def _video_grant(claims: dict[str, Any], grant: str, room_name: str | None = None) -> None:
        video = claims.get("video", {})
        if not video.get(grant):
            raise TwirpFailure("permission_denied", f"permissions denied: requires {grant}")
        if room_name is not None and video.get("room") != room_name:
            raise TwirpFailure("permission_denied", "permissions denied: token is for another room")

    def _id(self, prefix: str) -> str:
        return f"{prefix}{next(self._ids):06d}"

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

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

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

    # -- rooms and dispatch ---------------------------------------------------------------
    def _room(self, name: str, **fields: Any) -> models.Room:
        existing = self.rooms.get(name)
        if existing is not None:
            return existing
        r = models.Room(sid=self._id("RM_"), name=name, creation_time=int(time.time()), **fields)
        self.rooms[name] = r
        self.participants.setdefault(name, {})
        self.dispatches.setdefault(name, [])
        return r

    def _create_room(self, req: room.CreateRoomRequest, claims: dict[str, Any]) -> Message:
        self._video_grant(claims, "roomCreate")
        with self.lock:
            r = self._room(req.name, metadata=req.metadata, empty_timeout=req.empty_timeout,
                           max_participants=req.max_participants)  # fmt: skip
            for agent in req.agents:
                self._dispatch(req.name, agent.agent_name, agent.metadata)
            return r

    def _list_rooms(self, req: room.ListRoomsRequest, claims: dict[str, Any]) -> Message:
        self._video_grant(claims, "roomList")
        with self.lock:
            rooms = [r for r in self.rooms.values() if not req.names or r.name in req.names]
            for r in rooms:
                r.num_participants = len(self.participants.get(r.name, {}))
            return room.ListRoomsResponse(rooms=rooms)

    def _delete_room(self, req: room.DeleteRoomRequest, claims: dict[str, Any]) -> Message:
        self._video_grant(claims, "roomCreate")
        with self.lock:
            if self.rooms.pop(req.room, None) is None:
                raise TwirpFailure("not_found", "requested room does not exist")
            self.participants.pop(req.room, None)
            self.dispatches.pop(req.room, None)
            return room.DeleteRoomResponse()

    def _participant(self, room_name: str, identity: str) -> models.ParticipantInfo:
        p = self.participants.get(room_name, {}).get(identity)
        if p is None:
            raise TwirpFailure("not_found", "participant not found")
        return p

    def _list_participants(self, req: room.ListParticipantsRequest, claims: dict[str, Any]) -> Message:
        self._video_grant(claims, "roomAdmin", req.room)
        with self.lock:
            return room.ListParticipantsResponse(
                participants=list(self.participants.get(req.room, {}).values())
            )

    def _get_participant(self, req: room.RoomParticipantIdentity, claims: dict[str, Any]) -> Message:
        self._video_grant(claims, "roomAdmin", req.room)
        with self.lock:
            return self._participant(req.room, req.identity)

    def _remove_participant(self, req: room.RoomParticipantIdentity, claims: dict[str, Any]) -> Message:
        self._video_grant(claims, "roomAdmin", req.room)
        with self.lock:
            self._participant(req.room, req.identity)
            self.hang_up(req.room, req.identity)
            return room.RemoveParticipantResponse()

    def _dispatch(self, room_name: str, agent_name: str, metadata: str) -> ad.AgentDispatch:
        self._room(room_name)
        d = ad.AgentDispatch(id=self._id("AD_"), agent_name=agent_name, room=room_name, metadata=metadata)
        self.dispatches[room_name].append(d)
        return d

    def _create_dispatch(self, req: ad.CreateAgentDispatchRequest, claims: dict[str, Any]) -> Message:
        self._video_grant(claims, "roomAdmin", req.room)
        with self.lock:
            return self._dispatch(req.room, req.agent_name, req.metadata)

    def _list_dispatch(self, req: ad.ListAgentDispatchRequest, claims: dict[str, Any]) -> Message:
        self._video_grant(claims, "roomAdmin", req.room)
        with self.lock:
            items = [
                d for d in self.dispatches.get(req.room, []) if not req.dispatch_id or d.id == req.dispatch_id
            ]
            return ad.ListAgentDispatchResponse(agent_dispatches=items)

    def _delete_dispatch(self, req: ad.DeleteAgentDispatchRequest, claims: dict[str, Any]) -> Message:
        self._video_grant(claims, "roomAdmin", req.room)
        with self.lock:
            items = self.dispatches.get(req.room, [])
            for d in items:
                if d.id == req.dispatch_id:
                    items.remove(d)
                    return d
            raise TwirpFailure("not_found", "dispatch not found")


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


def _error(f: TwirpFailure) -> web.Response:
    body: dict[str, Any] = {"code": f.code, "msg": f.msg}
    if f.meta:
        body["meta"] = f.meta
    return web.Response(status=f.status, body=json.dumps(body).encode(), content_type="application/json")


__all__ = ["DialScript", "LiveKitDouble", "Seen", "TransferScript", "TwirpFailure"]
