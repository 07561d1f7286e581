"""RoomTransport: the CallTransport a CallSession talks to when its caller is in a LiveKit room.

The room side (``room.RoomCall``) feeds it the caller's frames, DTMF digits and departure; the
session reads them through ``inbound()`` exactly as it reads a Converse stream. Agent frames the
pacer sends are captured into the room's ``AudioSource`` by one playback task, so ``send_audio``
never waits on the room. ``room_rate`` is the rate LiveKit hands caller frames over and takes
agent frames at: a room call asks for the pipeline's rate (LiveKit resamples natively, see
``audio.py``); at another rate (48 kHz) this side resamples with ``rtc.AudioResampler``.

Queue policy: caller events wait in a bounded queue (10 s of frames); if the session ever falls
that far behind, the newest caller audio is dropped and counted. A departure is never dropped
(the oldest audio makes room for it). Agent frames wait in a bounded deque (30 s, a long
refusal message queued at once fits); beyond it the oldest frames go. ``ClearAudio`` (barge-in)
empties both the deque and the room source's own buffer.

End of speech (when this side resamples): the 16 -> 48 kHz resampler keeps the last ~18 ms of what it was given (its
filter's delay) and the slicer up to one partial 20 ms frame, until more audio pushes them out.
The session does not tell the transport where an utterance ends, so the playback task does:
when no agent audio came for ``TAIL_FLUSH_MS`` (the pacer sends a frame every 20 ms while the
agent speaks), it flushes that tail into the room, so the utterance's last syllable plays now,
not as a stale click before the next reply.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterator
from typing import Protocol

from livekit import rtc
from prometheus_client import Counter

from common.audio import LINEAR16, Format
from gateway.livekit.audio import FRAME_MS, PIPELINE_RATE, ROOM_RATE, AgentAudioOut, CallerAudioIn
from gateway.session.events import (
    CallerAudio,
    CallerDtmf,
    CallerHangup,
    ClearAudio,
    InboundEvent,
    OutboundEvent,
)

log = logging.getLogger(__name__)

TAIL_FLUSH_MS = 100  # several pacer frames of silence: the agent has stopped speaking
DROPPED_FRAMES = Counter(
    "voiceai_livekit_dropped_frames_total", "Audio frames dropped at a full room queue", ["direction"]
)


class FrameSink(Protocol):
    """Where agent frames go: ``rtc.AudioSource`` in a room (the members we use)."""

    async def capture_frame(self, frame: rtc.AudioFrame) -> None: ...

    def clear_queue(self) -> None: ...

    async def wait_for_playout(self) -> None: ...


class RoomTransport:
    """One call's audio and control events between a LiveKit room and a CallSession."""

    def __init__(
        self,
        sink: FrameSink,
        *,
        room_rate: int = ROOM_RATE,
        pipeline_rate: int = PIPELINE_RATE,
        inbound_limit_ms: int = 10_000,
        outbound_limit_ms: int = 30_000,
        tail_flush_ms: int = TAIL_FLUSH_MS,
    ) -> None:
        self.room_rate = room_rate
        self._fmt = Format(LINEAR16, pipeline_rate)
        self._in = CallerAudioIn(room_rate, pipeline_rate)
        self._out = AgentAudioOut(pipeline_rate, room_rate)
        self._events: asyncio.Queue[InboundEvent] = asyncio.Queue(inbound_limit_ms // FRAME_MS)
        self._frames: deque[rtc.AudioFrame] = deque()
        self._frames_limit = outbound_limit_ms // FRAME_MS
        self._sink = sink
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._tail_flush_s = tail_flush_ms / 1000.0
        self._holding = False  # the resampler has been given audio since its last flush
        self.left = False  # the caller is gone: nothing more comes in

    @property
    def caller_format(self) -> Format:
        return self._fmt

    # ------------------------------------------------------------------ caller -> session
    def caller_frame(self, frame: rtc.AudioFrame) -> None:
        """One frame of the caller's track (any size; mono at ``room_rate``)."""
        if self.left:
            return
        for pcm in self._in.push(frame):
            try:
                self._events.put_nowait(CallerAudio(pcm))
            except asyncio.QueueFull:
                DROPPED_FRAMES.labels("in").inc()

    def caller_dtmf(self, digit: str) -> None:
        if not self.left and digit:
            self._put_control(CallerDtmf(digit))

    def caller_left(self) -> None:
        """The caller hung up or left the room: the session sees a hangup (once)."""
        if not self.left:
            self.left = True
            self._put_control(CallerHangup())

    def _put_control(self, event: InboundEvent) -> None:
        if self._events.full():
            self._events.get_nowait()  # the oldest audio gives way to a digit or a hangup
            DROPPED_FRAMES.labels("in").inc()
        self._events.put_nowait(event)

    async def inbound(self) -> AsyncIterator[InboundEvent]:
        while True:
            event = await self._events.get()
            yield event
            if isinstance(event, CallerHangup):
                return

    # ------------------------------------------------------------------ session -> room
    def send_audio(self, frame: bytes) -> None:
        frames = self._out.push(frame)
        if not self._holding:
            self._holding = True
            self._wake.set()  # the playback task now waits with a deadline (module docstring)
        if not frames:
            return
        self._frames.extend(frames)
        overflow = len(self._frames) - self._frames_limit
        for _ in range(max(0, overflow)):
            self._frames.popleft()
            DROPPED_FRAMES.labels("out").inc()
        self._idle.clear()
        self._wake.set()

    def send_event(self, event: OutboundEvent) -> None:
        # Transcripts, timings and the end reach the call record through RecordingTransport;
        # the room itself only needs to know when to stop playing.
        if isinstance(event, ClearAudio):
            self.clear_playback()

    def clear_playback(self) -> None:
        self._frames.clear()
        self._out.reset()
        self._holding = False
        self._sink.clear_queue()
        self._idle.set()

    def finish_speech(self) -> None:
        """Push out what the resampler still holds (after the last frame of a message)."""
        self._holding = False
        frames = self._out.flush()
        if frames:
            self._frames.extend(frames)
            self._idle.clear()
            self._wake.set()

    async def run_playback(self) -> None:
        """Captures agent frames into the room's source, paced by it (it holds ~100 ms)."""
        while True:
            while self._frames:
                await self._sink.capture_frame(self._frames.popleft())
            self._idle.set()
            self._wake.clear()
            if not self._holding:
                await self._wake.wait()
                continue
            try:
                async with asyncio.timeout(self._tail_flush_s):
                    await self._wake.wait()
            except TimeoutError:
                self.finish_speech()  # the agent stopped: play what the filter still holds

    async def wait_played(self) -> None:
        """Until every queued agent frame has played out in the room (``run_playback`` runs)."""
        await self._idle.wait()
        await self._sink.wait_for_playout()
