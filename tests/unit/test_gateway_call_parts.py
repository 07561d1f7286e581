"""The call's parts on their own: runtime (tasks, timers, end), turn-taking and barge-in, each
owning its state and timers, driven the way CallSession drives them."""

from __future__ import annotations

import asyncio
import time

import pytest

from common.audio import LINEAR16, Format
from common.errors import InvalidArgument
from gateway.agents import TurnTakingProfile
from gateway.session.barge_in import BargeIn
from gateway.session.clock import AudioClock, EnergyVad
from gateway.session.events import EndReason
from gateway.session.floor import ActiveReply, Floor
from gateway.session.playout import Playout
from gateway.session.runtime import CallRuntime
from gateway.session.turn_taking import TurnTaking

FMT = Format(LINEAR16, 16000)
FRAME = FMT.bytes_for_ms(20)
FAST = TurnTakingProfile(
    end_of_turn_silence_ms=20,
    incomplete_turn_silence_ms=60,
    min_interruption_ms=30,
    false_interruption_timeout_ms=30,
)


def _floor() -> Floor:
    return Floor(Playout(FRAME, lambda _f: None, lambda _s: None, lambda _t: None))


async def test_runtime_ends_once_and_cancels_every_parts_timers_on_close() -> None:
    rt = CallRuntime("c" * 32)
    ended = rt.start()
    fired: list[str] = []
    a, b = rt.timers(), rt.timers()
    a.schedule("x", 0.01, fired.append, "a")
    b.schedule("x", 0.01, fired.append, "b")  # same name, another part: both stand
    b.schedule("y", 0.01, fired.append, "b-replaced")
    b.schedule("y", 0.01, fired.append, "b2")  # same part, same name: replaces
    await asyncio.sleep(0.05)
    assert sorted(fired) == ["a", "b", "b2"]
    a.schedule("late", 0.01, fired.append, "late")
    rt.end(EndReason.CALLER_HANGUP, "bye")
    rt.end(EndReason.MAX_DURATION, "too late")  # the first end wins
    rt.close()
    await asyncio.sleep(0.03)
    assert "late" not in fired and not rt.live
    assert (await ended).reason is EndReason.CALLER_HANGUP


async def test_runtime_task_failures_end_the_call() -> None:
    rt = CallRuntime("c" * 32)
    ended = rt.start()

    async def bad_input() -> None:
        raise InvalidArgument("nope")

    rt.spawn(bad_input(), "caller-in")
    with pytest.raises(InvalidArgument):
        await ended
    rt2 = CallRuntime("d" * 32)
    ended2 = rt2.start()

    async def bug() -> None:
        raise RuntimeError("boom")

    rt2.spawn(bug(), "stt-in")
    assert (await ended2).message == "internal error in stt-in"
    rt2.close()

    async def never() -> None:
        raise AssertionError("a closed call starts nothing")

    assert rt2.spawn(never(), "late") is None


async def test_turn_ends_after_the_silence_and_merges_words() -> None:
    floor = _floor()
    turns: list[str] = []
    rt = CallRuntime("c" * 32)
    tt = TurnTaking(
        FAST,
        floor,
        rt.timers(),
        AudioClock(FMT),
        EnergyVad(FMT),
        lambda text, _end, _final: turns.append(text),
    )
    now = time.monotonic()
    tt.speech_started(now)
    tt.heard("Hello there.", now)
    tt.speech_ended(0, now)
    tt.wait_for_end(now)
    tt.speech_started(now)  # more speech cancels the wait
    tt.heard("How are you?", now)
    await asyncio.sleep(0.04)
    assert turns == [] and tt.waiting
    tt.speech_ended(0, time.monotonic())
    tt.wait_for_end(time.monotonic())
    await asyncio.sleep(0.04)
    assert turns == ["Hello there. How are you?"] and not tt.waiting


async def test_no_turn_while_the_agent_holds_the_floor_and_dtmf_is_checked() -> None:
    floor = _floor()
    turns: list[str] = []
    rt = CallRuntime("c" * 32)
    tt = TurnTaking(
        FAST, floor, rt.timers(), AudioClock(FMT), EnergyVad(FMT), lambda t, _e, _f: turns.append(t)
    )
    floor.active = ActiveReply(1, None)
    tt.dtmf("5")
    await asyncio.sleep(0.04)
    assert turns == [] and tt.waiting  # kept for when the agent is done
    floor.active = None
    tt.wait_for_end(time.monotonic())
    await asyncio.sleep(0.04)
    assert turns == ["(the caller pressed 5)"]
    with pytest.raises(InvalidArgument):
        tt.dtmf("5x")


async def test_barge_in_pauses_then_resumes_on_a_backchannel_and_cuts_off_on_words() -> None:
    floor = _floor()
    seg = floor.playout.start_segment("A long answer.", 1)
    floor.playout.append(seg, b"\x01" * FRAME * 50)
    rt = CallRuntime("c" * 32)
    tt = TurnTaking(FAST, floor, rt.timers(), AudioClock(FMT), EnergyVad(FMT), lambda *_a: None)
    cut: list[bool] = []
    bi = BargeIn(FAST, floor, tt.caller, rt.timers(), lambda: cut.append(True))
    tt.speech_started(time.monotonic())
    bi.speech_started()
    await asyncio.sleep(0.05)
    assert bi.paused and floor.playout.paused  # talked over the agent long enough: paused
    assert not bi.takes_floor("uh-huh", time.monotonic())  # a backchannel: resumed, not a turn
    assert not bi.paused and not floor.playout.paused and cut == []
    assert bi.takes_floor("wait, stop please", time.monotonic())
    assert cut == [True]
    rt.close()
