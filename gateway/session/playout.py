"""Agent audio playout: 20 ms frames paced in real time, with pause, resume and clear.

One ``Pacer`` per process ticks every 20 ms on an absolute schedule and asks each active
``Playout`` for one frame; a per-process clock costs one timer for all calls instead of one
task wake-up per call per frame. A ``Playout`` holds the agent's queued audio as segments
tagged with the text they speak, so the caller sees the words as they are heard and the
history can record exactly what was said before a barge-in.

The pacer is shared, so it must not run as any one call: its task starts with an empty
context, and each playout's tick (and so every callback it fires: the words shown, the
turn's timing line, tasks and timers started from there) runs in the context of the call
that created the playout, which carries that call's tenant and call ids for logs and hops.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)

FRAME_MS = 20


@dataclass(slots=True)
class Segment:
    """Agent audio for one piece of text (a sentence or clause), in the caller's format."""

    audio: bytearray
    text: str
    turn: int
    sent: int = 0  # bytes already played
    end_of_reply: bool = False  # last segment of the turn's reply
    complete: bool = False  # no more audio will be appended


class Playout:
    """One call's queue of agent audio; the pacer pulls a frame per tick."""

    def __init__(
        self,
        frame_bytes: int,
        send_frame: Callable[[bytes], None],
        on_segment_start: Callable[[Segment], None],
        on_reply_done: Callable[[int], None],
        pad: bytes = b"\x00",
        context: contextvars.Context | None = None,
    ) -> None:
        self.frame_bytes = frame_bytes
        # The owning call's context (by default the creator's): the pacer ticks us inside it.
        self.context = context if context is not None else contextvars.copy_context()
        self._pad = pad
        self._send = send_frame
        self._on_segment_start = on_segment_start
        self._on_reply_done = on_reply_done
        self._segments: deque[Segment] = deque()
        self._closed_through = -1  # turns up to this one were cut off: their late audio is dropped
        self.paused = False
        self.frames_out = 0
        self.pacer: Pacer | None = None

    # -- producer side (CallSession / reply tasks)
    def start_segment(self, text: str, turn: int) -> Segment:
        seg = Segment(bytearray(), text, turn)
        if turn > self._closed_through:
            self._segments.append(seg)
        return seg

    def append(self, seg: Segment, audio: bytes) -> None:
        seg.audio += audio
        self._wake()

    def finish_reply(self, turn: int) -> None:
        """No more audio for ``turn``: mark its last segment so the pacer reports when it ends."""
        if turn <= self._closed_through:
            return
        for seg in reversed(self._segments):
            if seg.turn == turn:
                seg.end_of_reply = True
                seg.complete = True
                self._wake()
                return
        self._on_reply_done(turn)

    def clear(self, close_turn: int | None = None) -> list[Segment]:
        """Drop everything not yet played; returns the dropped (possibly half-played) segments.

        With ``close_turn`` (a barge-in), audio that still arrives for that turn or an earlier
        one (a TTS chunk already in flight when the reply was cancelled) is never queued.
        """
        if close_turn is not None:
            self._closed_through = max(self._closed_through, close_turn)
        dropped = list(self._segments)
        self._segments.clear()
        self.paused = False
        return dropped

    def requeue(self, seg: Segment) -> None:
        """Put back a segment taken out by ``clear`` (keeps its play position)."""
        self._segments.append(seg)
        self._wake()

    def pause(self) -> None:
        self.paused = True

    def resume(self) -> None:
        self.paused = False
        self._wake()

    @property
    def busy(self) -> bool:
        return bool(self._segments)

    def current(self) -> Segment | None:
        return self._segments[0] if self._segments else None

    def _wake(self) -> None:
        if self.pacer is not None and not self.paused and self.pacer.activate(self):
            self.pacer.start_early(self)

    # -- consumer side (Pacer)
    def tick(self) -> bool:
        """Send one frame if one is ready; False when idle (the pacer then forgets us)."""
        if self.paused:
            return False
        size = self.frame_bytes
        while self._segments:
            seg = self._segments[0]
            remaining = len(seg.audio) - seg.sent
            if remaining >= size or (seg.complete and remaining > 0):
                if seg.sent == 0:
                    self._on_segment_start(seg)
                frame = bytes(seg.audio[seg.sent : seg.sent + size])
                if len(frame) < size:
                    frame += self._pad * (size - len(frame))
                seg.sent += len(frame)
                self.frames_out += 1
                self._send(frame)
                return True
            if seg.complete or (remaining == 0 and len(self._segments) > 1):
                self._segments.popleft()
                if seg.end_of_reply:
                    self._on_reply_done(seg.turn)
                continue
            return False  # waiting for more audio of the current segment
        return False


class Pacer:
    """Per-process 20 ms clock driving every active playout."""

    def __init__(self, frame_ms: int = FRAME_MS, max_catch_up: int = 3) -> None:
        self._period = frame_ms / 1000.0
        self._active: dict[int, Playout] = {}
        self._max_catch_up = max_catch_up
        self._task: asyncio.Task[None] | None = None
        self._next_tick = 0.0
        self.late_ticks = 0

    def activate(self, playout: Playout) -> bool:
        """Mark ``playout`` as having audio; True if it was idle until now."""
        key = id(playout)
        if key in self._active:
            return False
        self._active[key] = playout
        return True

    def start_early(self, playout: Playout) -> None:
        """Send the first frame of a new utterance now rather than at the next tick, unless
        that tick is near: saves up to a frame of latency, keeps the next gap >= half a frame."""
        if self._next_tick - time.monotonic() > self._period / 2 and not playout.tick():
            self._active.pop(id(playout), None)

    def forget(self, playout: Playout) -> None:
        self._active.pop(id(playout), None)

    def attach(self, playout: Playout) -> None:
        playout.pacer = self

    def start(self) -> None:
        if self._task is None:
            # Started from inside whichever call comes first: an empty context keeps that
            # call's ids off everything the pacer does for the process.
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="pacer", context=contextvars.Context()
            )

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        period = self._period
        next_tick = time.monotonic() + period
        while True:
            self._next_tick = next_tick
            delay = next_tick - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            now = time.monotonic()
            behind = int((now - next_tick) / period)
            if behind > self._max_catch_up:
                # Far behind (loop stalled): skip ahead rather than burst seconds of audio.
                self.late_ticks += behind
                next_tick = now
                behind = 0
            for _ in range(behind + 1):
                self._tick_all()
            next_tick += period * (behind + 1)

    def _tick_all(self) -> None:
        if not self._active:
            return
        idle = []
        for key, playout in self._active.items():
            if not playout.context.run(_tick_or_log, playout):
                idle.append(key)
        for key in idle:
            self._active.pop(key, None)


def _tick_or_log(playout: Playout) -> bool:
    """One tick; a failure is logged (as the call it belongs to) and idles that playout only."""
    try:
        return playout.tick()
    except Exception:
        log.exception("playout tick failed")
        return False
