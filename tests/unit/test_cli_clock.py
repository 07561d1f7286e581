"""The caller's frame clock: real-time pacing on an absolute schedule, with no drift."""

from __future__ import annotations

import pytest

from gateway.cli import FrameClock


class FakeTime:
    """A clock whose sleeps always overshoot, as real event-loop sleeps do."""

    def __init__(self, oversleep_s: float) -> None:
        self.now = 1000.0
        self.oversleep_s = oversleep_s
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds + self.oversleep_s


async def test_frames_stay_on_the_absolute_schedule_despite_oversleeping() -> None:
    t = FakeTime(oversleep_s=0.003)
    clock = FrameClock(clock=t.clock, sleep=t.sleep)
    sent = []
    for _ in range(500):  # 10 s of audio
        due = await clock.tick()
        sent.append(t.now)
        assert due == pytest.approx(clock.t0 + (len(sent) - 1) * 0.02)
    # Every frame goes out within one oversleep of its slot: the error does not accumulate
    # (a fixed 20 ms sleep per frame would be 1.5 s late by now).
    lateness = [s - (clock.t0 + k * 0.02) for k, s in enumerate(sent)]
    assert max(lateness) <= 0.003 + 1e-9
    assert sent[-1] - sent[0] < 499 * 0.02 + 0.004


async def test_the_first_frame_is_due_at_once() -> None:
    t = FakeTime(0.0)
    clock = FrameClock(clock=t.clock, sleep=t.sleep)
    assert await clock.tick() == clock.t0
    assert t.sleeps == []
    await clock.tick()
    assert t.sleeps == pytest.approx([0.02])


async def test_small_delays_are_caught_up_without_sleeping() -> None:
    t = FakeTime(0.0)
    clock = FrameClock(clock=t.clock, sleep=t.sleep)
    await clock.tick()
    t.now += 0.1  # the loop was busy for 100 ms: five frames are due now
    for _ in range(5):
        await clock.tick()
    assert t.sleeps == []  # sent back to back to get back on schedule
    await clock.tick()
    assert t.sleeps == pytest.approx([0.02])
    assert clock.restarts == 0


async def test_a_long_stall_restarts_the_schedule_instead_of_bursting() -> None:
    t = FakeTime(0.0)
    clock = FrameClock(clock=t.clock, sleep=t.sleep, max_lag_s=0.5)
    await clock.tick()
    t.now += 3.0  # suspended for 3 s: 150 frames would be "due"
    due = await clock.tick()
    assert due == t.now and clock.restarts == 1
    await clock.tick()
    assert t.sleeps == pytest.approx([0.02])  # back to real time at once, no burst of 150 frames
