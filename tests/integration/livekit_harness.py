"""A room call without a LiveKit server: the test plays the room (it feeds the caller's 48 kHz
``rtc.AudioFrame``s into a real ``RoomTransport`` and keeps the agent's frames), and room calls
run on a gateway wired to real services on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import numpy as np
from livekit import rtc

from common.auth import AuthSettings, build_auth
from common.discovery import ChannelPool
from gateway.agents import BuiltinAgentCatalog
from gateway.app import GatewayApp
from gateway.livekit.calls import CallControls, RoomCalls
from gateway.livekit.routing import Caller, CallRouter
from gateway.livekit.service import call_services
from gateway.livekit.settings import LiveKitSettings
from gateway.livekit.sip_control import SipControl, TransferFailed
from gateway.livekit.transport import RoomTransport
from gateway.session.events import OutboundEvent, TurnTimings
from tests.credentials import KEY_DIR


class RecordingSip:
    """A SipControl double: records what the call asked of LiveKit."""

    def __init__(self) -> None:
        self.transfers: list[tuple[str, str, str]] = []
        self.hung_up: list[str] = []
        self.refuse: str = ""

    async def transfer(self, room: str, identity: str, to: str) -> None:
        if self.refuse:
            raise TransferFailed(self.refuse)
        self.transfers.append((room, identity, to))

    async def hang_up(self, room: str) -> None:
        self.hung_up.append(room)


class RoomSink:
    """The room's AudioSource as the caller hears it: keeps the agent's frames, paced like one."""

    def __init__(self) -> None:
        self.frames: list[rtc.AudioFrame] = []

    async def capture_frame(self, frame: rtc.AudioFrame) -> None:
        self.frames.append(frame)
        await asyncio.sleep(0)

    def clear_queue(self) -> None:
        return None

    async def wait_for_playout(self) -> None:
        return None

    def pcm(self) -> bytes:
        return b"".join(bytes(f.data.cast("B")) for f in self.frames)


class ObservedTransport(RoomTransport):
    """A RoomTransport that also keeps the events the session sends (as a UI would show them)."""

    def __init__(self, sink: RoomSink) -> None:
        super().__init__(sink)
        self.events: list[OutboundEvent] = []

    def send_event(self, event: OutboundEvent) -> None:
        self.events.append(event)
        super().send_event(event)


@dataclass
class RoomLine:
    """One room: its caller, their line (10 ms 48 kHz frames in real time) and what they hear."""

    caller: Caller
    name: str = "room-test"
    sink: RoomSink = field(default_factory=RoomSink)
    transport: ObservedTransport = field(init=False)
    _next: float = 0.0

    def __post_init__(self) -> None:
        self.transport = ObservedTransport(self.sink)

    async def say(self, pcm48: bytes) -> None:
        """``pcm48`` (LINEAR16 at 48 kHz) down the line as 10 ms frames, paced on a clock."""
        self._next = max(self._next, time.monotonic() - 0.1)
        for i in range(0, len(pcm48) - 959, 960):
            self.transport.caller_frame(rtc.AudioFrame(pcm48[i : i + 960], 48000, 1, 480))
            self._next += 0.01
            if (delay := self._next - time.monotonic()) > 0:
                await asyncio.sleep(delay)

    async def wait_for(self, predicate: Callable[[RoomLine], object], timeout: float = 10.0) -> object:
        """Until ``predicate`` holds, the line carrying silence meanwhile."""
        deadline = time.monotonic() + timeout
        while not (value := predicate(self)):
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out; events: {[type(e).__name__ for e in self.transport.events]}"
                )
            await self.say(bytes(960 * 10))
        return value

    def turn_done(self, turn: int) -> Callable[[RoomLine], object]:
        return lambda room: any(isinstance(e, TurnTimings) and e.turn == turn for e in room.transport.events)


def tone48(ms: int, freq: float = 440.0) -> bytes:
    t = np.arange(48 * ms) / 48000
    return (8000 * np.sin(2 * np.pi * freq * t)).astype(np.int16).tobytes()


@contextlib.asynccontextmanager
async def room_calls(
    app: GatewayApp,
    settings: LiveKitSettings | None = None,
    router: type[CallRouter] = CallRouter,
    sip_control: SipControl | None = None,
) -> AsyncIterator[tuple[RoomCalls, SipControl]]:
    """Room calls on ``app`` (its tenancy, if configured, routes numbers) with ``sip_control``
    (default a ``RecordingSip``); ``router`` lets a test put a race into the routing."""
    sip = sip_control or RecordingSip()
    auth = build_auth(AuthSettings(mode="dev", dev_key_dir=KEY_DIR), issue_internal_tokens=True)
    assert auth.internal_issuer is not None
    pool = ChannelPool("tenant", app.resolver, propagate_context=False) if app.tenancy.catalog else None
    routed = router(
        catalog=app.tenancy.catalog or BuiltinAgentCatalog(),
        issuer=auth.internal_issuer,
        users=auth.authenticator,
        tenant_pool=pool,
    )
    services = dataclasses.replace(call_services(app, sip, auth, pool), router=routed)
    try:
        yield RoomCalls(services, settings or LiveKitSettings()), sip
    finally:
        if pool is not None:
            await pool.close()


def start_call(
    calls: RoomCalls, room: RoomLine, sip: SipControl, settings: LiveKitSettings | None = None
) -> tuple[asyncio.Task[str], CallControls]:
    controls = CallControls(room.transport, sip, room.name, room.caller, settings or LiveKitSettings())
    task = asyncio.create_task(calls.run(room.name, room.caller, room.transport, controls))
    return task, controls
