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
async, any loop scope) can use it; the test reads state under :attr:`lock`. The state and
handlers live in ``livekit_rooms.RoomState`` and ``livekit_sip.SipState``; this module is the
HTTP side (routes, Twirp encoding, tokens and grants, faults).
"""

from __future__ import annotations

import asyncio
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
from livekit.protocol import room, sip

from tests.doubles.livekit_rooms import TwirpFailure
from tests.doubles.livekit_sip import DialScript, SipState, TransferScript


@dataclass
class Seen:
    """One request as the double decoded it (after authentication)."""

    service: str
    method: str
    request: Message
    claims: dict[str, Any]
    at: float = field(default_factory=time.monotonic)


class LiveKitDouble(SipState):
    """One LiveKit server's API (one API key) with SIP, rooms and agent dispatch, in memory."""

    def __init__(
        self, api_key: str = "APIdouble", api_secret: str = "double-secret-0123456789abcdef-0123456789"
    ) -> None:
        super().__init__()
        self.api_key, self.api_secret = api_key, api_secret
        self.seen: list[Seen] = []
        self._faults: list[tuple[str, TwirpFailure, list[int]]] = []
        self._delays: dict[str, float] = {}
        self._port = 0
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
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


def _error(f: TwirpFailure) -> web.Response:
    body: dict[str, Any] = {"code": f.code, "msg": f.msg}
    if f.meta:
        body["meta"] = f.meta
    return web.Response(status=f.status, body=json.dumps(body).encode(), content_type="application/json")


__all__ = ["DialScript", "LiveKitDouble", "Seen", "TransferScript", "TwirpFailure"]
