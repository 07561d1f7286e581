"""The caller's real-time clock: when each 20 ms frame of caller audio is due."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

FRAME_MS = 20


class FrameClock:
    """Frame k is due at t0 + k * frame, on an absolute schedule.

    Sleeping a fixed 20 ms per frame would drift by every oversleep; an absolute schedule does
    not, and a short delay is caught up by sending the due frames back to back. After a stall
    longer than ``max_lag_s`` (a suspended process) the schedule restarts instead of bursting
    the missed frames: a phone line would have dropped them too.
    """

    def __init__(
        self,
        frame_s: float = FRAME_MS / 1000,
        max_lag_s: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        self.frame_s = frame_s
        self.max_lag_s = max_lag_s
        self._clock = clock
        self._sleep = sleep
        self.t0 = clock()
        self.frames = 0  # frames released so far
        self.restarts = 0

    def due(self) -> float:
        """When the next frame is due (clock seconds)."""
        return self.t0 + self.frames * self.frame_s

    async def tick(self) -> float:
        """Wait until the next frame is due and return its due time. Frame 0 is due at once."""
        due, now = self.due(), self._clock()
        if now - due > self.max_lag_s:
            self.t0 += now - due
            self.restarts += 1
            due = now
        elif due > now:
            await self._sleep(due - now)
        self.frames += 1
        return due
