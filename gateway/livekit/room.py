"""The rtc side of a room call: join with the job's identity, find the caller, feed their track,
keypad and departure into a ``RoomTransport``, publish the agent's track.

This is glue between ``livekit.rtc`` events and ``RoomTransport`` / ``CallControls``, kept free
of decisions (it cannot be tested here without a LiveKit server); the call itself is
``calls.RoomCalls``.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from livekit import api, rtc
from livekit.api.access_token import Claims

from common.tasks import cancel_and_wait
from gateway.livekit.audio import FRAME_MS, PIPELINE_RATE
from gateway.livekit.calls import CallControls, RoomCalls
from gateway.livekit.routing import Caller
from gateway.livekit.settings import LiveKitCredentials, LiveKitSettings
from gateway.livekit.sip_control import SipControl
from gateway.livekit.transport import RoomTransport

log = logging.getLogger(__name__)

# Who can be the caller: a phone (SIP) or a person in a browser or app; never another agent,
# an egress or an ingress.
CALLER_KINDS = frozenset(
    {
        rtc.ParticipantKind.PARTICIPANT_KIND_SIP,
        rtc.ParticipantKind.PARTICIPANT_KIND_STANDARD,
        rtc.ParticipantKind.PARTICIPANT_KIND_CONNECTOR,
    }
)
# LiveKit's AudioStream/AudioSource convert between the track's 48 kHz and this natively.
NATIVE_RATE = PIPELINE_RATE
CALLER_FRAMES_BUFFERED = 50  # 1 s of the caller's 20 ms frames; the oldest go first beyond it


@dataclass(frozen=True, slots=True)
class JobTicket:
    """A LiveKit job handed from its job thread to the gateway's loop."""

    job_id: str
    room: str
    claims: Claims  # the job token's claims, as the LiveKit server granted them


def room_token(creds: LiveKitCredentials, claims: Claims) -> str:
    """The job's own grants, signed with the project key on this loop (the job token was issued
    to the job thread; the same identity joins from here)."""
    token = (
        api.AccessToken(creds.api_key, creds.api_secret.get_secret_value())
        .with_identity(claims.identity)
        .with_name(claims.name)
        .with_metadata(claims.metadata)
    )
    if claims.kind:
        token = token.with_kind(claims.kind)  # type: ignore[arg-type]
    if claims.attributes:
        token = token.with_attributes(claims.attributes)
    if claims.video is not None:
        token = token.with_grants(claims.video)
    return token.to_jwt()


async def wait_for_caller(room: rtc.Room, timeout_s: float) -> rtc.RemoteParticipant:
    """The first remote participant to join ``room`` (the caller), within ``timeout_s``."""
    found = next((p for p in room.remote_participants.values() if p.kind in CALLER_KINDS), None)
    if found is not None:
        return found
    joined: asyncio.Future[rtc.RemoteParticipant] = asyncio.get_running_loop().create_future()

    def on_join(p: rtc.RemoteParticipant) -> None:
        if p.kind in CALLER_KINDS and not joined.done():
            joined.set_result(p)

    room.on("participant_connected", on_join)
    try:
        async with asyncio.timeout(timeout_s):
            return await joined
    finally:
        room.off("participant_connected", on_join)


async def read_track(track: rtc.Track, transport: RoomTransport) -> None:
    """Feed the caller's track into the transport until it ends."""
    # 20 ms frames from the FFI, not its default 10 ms: half the per-frame work on this loop;
    # at the transport's rate, resampled natively (no resampler in Python).
    stream = rtc.AudioStream(
        track,
        sample_rate=transport.room_rate,
        num_channels=1,
        frame_size_ms=FRAME_MS,
        capacity=CALLER_FRAMES_BUFFERED,
    )
    try:
        async for event in stream:
            transport.caller_frame(event.frame)
    finally:
        await stream.aclose()


async def run_room_call(
    ticket: JobTicket,
    *,
    calls: RoomCalls,
    creds: LiveKitCredentials,
    settings: LiveKitSettings,
    sip: SipControl,
) -> str:
    """Join the job's room, run its call, leave; returns why it ended."""
    room = rtc.Room()
    await room.connect(creds.url, room_token(creds, ticket.claims), rtc.RoomOptions(auto_subscribe=True))
    # The agent's audio at the pipeline's rate: LiveKit resamples it natively for the track.
    source = rtc.AudioSource(NATIVE_RATE, 1, queue_size_ms=settings.playout_buffer_ms)
    readers: list[asyncio.Task[None]] = []
    try:
        try:
            participant = await wait_for_caller(room, settings.participant_timeout_s)
        except TimeoutError:
            log.info("nobody joined room %s in %.0f s", ticket.room, settings.participant_timeout_s)
            return "no_caller"
        caller = Caller(
            identity=participant.identity,
            sip=participant.kind == rtc.ParticipantKind.PARTICIPANT_KIND_SIP,
            attributes=dict(participant.attributes),
            metadata=participant.metadata,
            room_metadata=room.metadata,
        )
        transport = RoomTransport(source, room_rate=NATIVE_RATE)
        controls = CallControls(transport, sip, ticket.room, caller, settings)

        def listen(track: rtc.Track, _pub: rtc.RemoteTrackPublication, p: rtc.RemoteParticipant) -> None:
            if p.identity == caller.identity and track.kind == rtc.TrackKind.KIND_AUDIO and not readers:
                readers.append(
                    asyncio.get_running_loop().create_task(read_track(track, transport), name="caller-track")
                )

        def left(p: rtc.RemoteParticipant) -> None:
            if p.identity == caller.identity:
                transport.caller_left()

        def keypad(event: rtc.SipDTMF) -> None:
            if event.participant is None or event.participant.identity == caller.identity:
                controls.dtmf(event.digit)

        room.on("track_subscribed", listen)
        room.on("participant_disconnected", left)
        room.on("disconnected", lambda *_: transport.caller_left())
        room.on("sip_dtmf_received", keypad)
        for pub in participant.track_publications.values():
            if pub.track is not None:
                listen(pub.track, pub, participant)
        if caller.identity not in room.remote_participants:
            transport.caller_left()  # gone before the handlers were in place
        track = rtc.LocalAudioTrack.create_audio_track("agent-voice", source)
        options = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
        await room.local_participant.publish_track(track, options)
        return await calls.run(ticket.room, caller, transport, controls)
    finally:
        await cancel_and_wait(*readers)
        await room.disconnect()
        await source.aclose()
