"""The LiveKit double's rooms, participants and agent dispatches (see ``livekit_twirp``)."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from typing import Any

from google.protobuf.message import Message
from livekit.protocol import agent_dispatch as ad
from livekit.protocol import models, room

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


class RoomState:
    """Rooms, their participants and agent dispatches, in memory; every handler checks grants."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.rooms: dict[str, models.Room] = {}
        self.participants: dict[str, dict[str, models.ParticipantInfo]] = {}
        self.dispatches: dict[str, list[ad.AgentDispatch]] = {}
        self._ids = itertools.count(1)
        self._tasks: set[asyncio.Task[None]] = set()

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

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

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
