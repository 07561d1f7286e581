"""Agent audio playout: 20 ms frames paced in real time, with pause, resume and clear.

One ``Pacer`` per process ticks on an absolute schedule and asks each active ``Playout`` for
one frame every 20 ms; a per-process clock costs a few timers for all calls instead of one
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
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

log = logging.getLogger(__name__)

FRAME_MS = 20


def _ignore(*_args: object) -> None:
    return None


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

    def queue_whole(self, text: str, audio: bytes, turn: int) -> Segment:
        """Queue a piece whose audio is all there (a fixed phrase) at the end."""
        seg = self.start_segment(text, turn)
        seg.complete = True
        self.append(seg, audio)
        return seg

    def push_front(self, pieces: Sequence[tuple[str, bytes]], turn: int) -> None:
        """Queue whole pieces ahead of everything queued (a filler cutting in line); like any
        new agent audio it resumes a paused playout. Nothing is queued for a closed turn."""
        self.paused = False
        if turn > self._closed_through:
            segs = [Segment(bytearray(audio), text, turn, complete=True) for text, audio in pieces]
            self._segments.extendleft(reversed(segs))
        self._wake()

    def drop(self, segments: Collection[Segment]) -> None:
        """Take ``segments`` out of the queue; the rest keep their order, and a pause holds."""
        ids = {id(s) for s in segments}
        self._segments = deque(s for s in self._segments if id(s) not in ids)
        if self._segments:
            self._wake()

    def close(self) -> None:
        """The call is over: drop queued audio and the callbacks into the call, so no reference
        cycle keeps the call's objects (and their buffers) alive until a full collection."""
        self._segments.clear()
        self._send = self._on_segment_start = self._on_reply_done = _ignore
        self.pacer = None

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
        if self.pacer is not None and not self.paused:
            self.pacer.activate(self)

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


def heard_text(segments: list[Segment], dropped: list[Segment]) -> str:
    """What the caller actually heard: whole played segments plus the played share of the
    segment that was cut (by audio played, to a word boundary)."""
    dropped_ids = {id(s) for s in dropped}
    parts: list[str] = []
    for seg in segments:
        if id(seg) not in dropped_ids:
            parts.append(seg.text)
            continue
        if seg.sent and seg.audio:
            share = min(1.0, seg.sent / len(seg.audio))
            wordlist = seg.text.split()
            parts.append(" ".join(wordlist[: round(len(wordlist) * share)]))
        break
    return " ".join(p for p in parts if p).strip()


class Pacer:
    """Per-process real-time clock driving every active playout (see module docstring).

    The 20 ms period is split into ``phases`` slots; each playout belongs to one slot phase
    and gets one frame per period, on its slot. A playout that gets audio after being idle
    sends its first frame at once and joins the phase of the slot that has just begun, so its
    second frame follows 15-20 ms later (never late, at most a quarter frame early) instead of
    waiting up to a whole period for a shared tick; each slot writes only its own share of the
    calls' frames rather than all of them in one burst. The clock wakes only for slots that
    have playouts, and parks when there is nothing to play.
    """

    def __init__(self, frame_ms: int = FRAME_MS, phases: int = 4, max_catch_up: int = 3) -> None:
        self._period = frame_ms / 1000.0
        self._phases = phases
        self._step = self._period / phases
        # per phase: playout id -> (playout, first slot it may be ticked on)
        self._groups: list[dict[int, tuple[Playout, int]]] = [{} for _ in range(phases)]
        self._group_of: dict[int, int] = {}
        self._max_behind = max_catch_up * phases
        self._task: asyncio.Task[None] | None = None
        self._anchor = 0.0  # slot k starts at _anchor + k * _step; its phase is k % phases
        self._slot = 0  # the first slot not yet served
        self._parked: asyncio.Future[None] | None = None
        self.late_ticks = 0

    def activate(self, playout: Playout) -> None:
        """``playout`` has audio after being idle: send its first frame now, then one per period."""
        key = id(playout)
        if key in self._group_of:
            return  # already ticking
        self._group_of[key] = -1  # starting: a wake from inside its first tick changes nothing
        try:
            sent = playout.context.run(_tick_or_log, playout)  # as the call, like every tick
        finally:
            del self._group_of[key]
        if not sent:
            return  # no whole frame yet: the next append tries again
        now = time.monotonic()
        if self._group_of:
            slot = int((now - self._anchor) / self._step)  # the slot that has just begun
        else:  # nothing was playing: restart the clock on this frame (slot 0)
            slot = 0
            self._anchor = now
            self._slot = 1
            if self._parked is not None and not self._parked.done():
                self._parked.set_result(None)
        group = slot % self._phases
        # Not on this slot even if it is served late: the frame for it has just gone out.
        self._groups[group][key] = (playout, slot + self._phases)
        self._group_of[key] = group

    def forget(self, playout: Playout) -> None:
        group = self._group_of.pop(id(playout), None)
        if group is not None:
            self._groups[group].pop(id(playout), None)

    def attach(self, playout: Playout) -> None:
        playout.pacer = self

    @property
    def active(self) -> int:
        return len(self._group_of)

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

    def _next_busy_slot(self) -> int:
        slot = self._slot
        for _ in range(self._phases):
            if self._groups[slot % self._phases]:
                break
            slot += 1
        return slot

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._group_of:
                self._parked = loop.create_future()
                await self._parked  # activate() restarts the clock
                self._parked = None
                continue
            slot = self._next_busy_slot()
            delay = self._anchor + slot * self._step - time.monotonic()
            if delay > 0.001:  # timers have 1 ms resolution: a slot due within 1 ms is due
                await asyncio.sleep(delay)
                continue  # playouts may have come or gone meanwhile
            now_slot = int((time.monotonic() - self._anchor) / self._step)
            if now_slot - slot > self._max_behind:
                # Far behind (loop stalled): skip ahead rather than burst seconds of audio.
                self.late_ticks += (now_slot - slot) // self._phases
                slot = now_slot
            last = max(slot, now_slot)
            for k in range(slot, last + 1):
                self._tick_group(k)
            self._slot = last + 1

    def _tick_group(self, slot: int) -> None:
        playouts = self._groups[slot % self._phases]
        if not playouts:
            return
        idle = []
        for key, (playout, first_slot) in playouts.items():
            if slot < first_slot:
                continue
            if not playout.context.run(_tick_or_log, playout):
                idle.append(key)
        for key in idle:
            playouts.pop(key, None)
            self._group_of.pop(key, None)


def _tick_or_log(playout: Playout) -> bool:
    """One tick; a failure is logged (as the call it belongs to) and idles that playout only."""
    try:
        return playout.tick()
    except Exception:
        log.exception("playout tick failed")
        return False
