"""Playout: 20 ms frames in order, text shown as its audio starts, pause/resume/clear, and the
record of what the caller actually heard."""

from __future__ import annotations

import asyncio
import contextvars

from gateway.session.call import heard_text
from gateway.session.playout import Pacer, Playout

FRAME = 640


def _playout() -> tuple[Playout, list[bytes], list[str], list[int]]:
    frames: list[bytes] = []
    texts: list[str] = []
    done: list[int] = []
    p = Playout(FRAME, frames.append, lambda seg: texts.append(seg.text), done.append)
    return p, frames, texts, done


def test_frames_segments_and_reply_done() -> None:
    p, frames, texts, done = _playout()
    a = p.start_segment("Hello there.", 1)
    p.append(a, b"\x01" * (FRAME * 2 + 100))  # not a whole number of frames
    a.complete = True
    b = p.start_segment("Bye.", 1)
    p.append(b, b"\x02" * FRAME)
    p.finish_reply(1)
    while p.tick():
        pass
    assert texts == ["Hello there.", "Bye."]
    assert len(frames) == 4 and all(len(f) == FRAME for f in frames)
    assert frames[2][:100] == b"\x01" * 100 and frames[2][100:] == b"\x00" * (FRAME - 100)  # padded
    assert done == [1]
    assert not p.busy


def test_waits_for_more_audio_of_an_open_segment() -> None:
    p, frames, _, done = _playout()
    seg = p.start_segment("Streaming.", 2)
    p.append(seg, b"\x01" * (FRAME + 10))
    assert p.tick() and not p.tick()  # 10 bytes left: wait, the segment is still open
    p.append(seg, b"\x01" * (FRAME - 10))
    assert p.tick()
    p.finish_reply(2)
    assert not p.tick()
    assert done == [2] and len(frames) == 2


def test_pause_resume_and_clear() -> None:
    p, frames, _, _ = _playout()
    seg = p.start_segment("One two three four.", 3)
    p.append(seg, b"\x01" * FRAME * 10)
    p.tick()
    p.pause()
    assert not p.tick() and len(frames) == 1
    p.resume()
    p.tick()
    assert len(frames) == 2
    dropped = p.clear()
    assert dropped == [seg] and not p.busy
    assert heard_text([seg], dropped) == "One"  # 2 of 10 frames heard: 20% of four words


def test_heard_text_keeps_whole_played_segments() -> None:
    p, _, _, _ = _playout()
    first = p.start_segment("First sentence.", 1)
    p.append(first, b"\x01" * FRAME)
    first.complete = True
    second = p.start_segment("Second one is long.", 1)
    p.append(second, b"\x01" * FRAME * 4)
    for _ in range(3):
        p.tick()
    dropped = p.clear()
    assert heard_text([first, second], dropped) == "First sentence. Second one"


async def test_pacer_sends_real_time_frames() -> None:
    pacer = Pacer()
    p, frames, _, done = _playout()
    pacer.attach(p)
    pacer.start()
    seg = p.start_segment("x", 1)
    p.append(seg, b"\x01" * FRAME * 10)
    p.finish_reply(1)
    t0 = asyncio.get_running_loop().time()
    while not done:  # noqa: ASYNC110 - polling a plain list filled by a callback
        await asyncio.sleep(0.01)
    elapsed = asyncio.get_running_loop().time() - t0
    await pacer.stop()
    assert len(frames) == 10
    assert 0.15 <= elapsed <= 0.5  # ten 20 ms frames take about 200 ms, not zero


async def test_first_frame_goes_out_at_once_and_the_clock_stops_when_idle() -> None:
    pacer = Pacer()
    pacer.start()
    a, a_frames, _, a_done = _playout()
    b, b_frames, _, b_done = _playout()
    pacer.attach(a)
    pacer.attach(b)
    seg = a.start_segment("x", 1)
    a.append(seg, b"\x01" * FRAME * 5)
    a.finish_reply(1)
    assert len(a_frames) == 1  # no wait for the next tick
    await asyncio.sleep(0.03)
    seg = b.start_segment("y", 1)
    b.append(seg, b"\x02" * FRAME * 3)
    b.finish_reply(1)
    assert len(b_frames) == 1 and pacer.active == 2
    while not (a_done and b_done):  # noqa: ASYNC110 - plain lists filled by callbacks
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)
    assert len(a_frames) == 5 and len(b_frames) == 3
    assert pacer.active == 0  # idle playouts are forgotten; the clock parks
    await pacer.stop()


def test_audio_of_a_cut_off_turn_is_never_queued() -> None:
    p, frames, _, done = _playout()
    seg = p.start_segment("Long reply.", 4)
    p.append(seg, b"\x01" * FRAME * 5)
    p.tick()
    p.clear(close_turn=4)  # barge-in on turn 4
    late = p.start_segment("A chunk that was already in flight.", 4)
    p.append(late, b"\x02" * FRAME * 5)
    p.finish_reply(4)
    assert not p.busy and not p.tick() and done == []
    nxt = p.start_segment("Next turn.", 5)
    p.append(nxt, b"\x03" * FRAME)
    p.finish_reply(5)
    assert p.tick() and frames[-1] == b"\x03" * FRAME


async def test_the_shared_pacer_ticks_each_playout_as_its_own_call() -> None:
    from common import context

    pacer = Pacer()
    seen: dict[str, list[str]] = {"a": [], "b": []}

    def playout_for(call: str) -> Playout:
        # Created inside its call (as CallSession does in the Converse handler).
        def make() -> Playout:
            context.bind(context.RequestContext("tenant", call))
            return Playout(
                FRAME,
                lambda _f: seen[call].append(context.call_id()),
                lambda _seg: None,
                lambda _turn: seen[call].append(context.call_id()),
            )

        return contextvars.copy_context().run(make)

    a, b = playout_for("a"), playout_for("b")

    def start_inside_call_a() -> None:  # the first call starts the pacer, as in Converse
        context.bind(context.RequestContext("tenant", "a"))
        pacer.start()

    contextvars.copy_context().run(start_inside_call_a)
    for p in (a, b):
        pacer.attach(p)
        seg = p.start_segment("x", 1)
        p.append(seg, b"\x01" * FRAME * 3)
        p.finish_reply(1)
    while len(seen["a"]) < 4 or len(seen["b"]) < 4:  # noqa: ASYNC110 - filled by callbacks
        await asyncio.sleep(0.01)
    await pacer.stop()
    assert set(seen["a"]) == {"a"} and set(seen["b"]) == {"b"}
    assert context.call_id() == ""  # nothing leaked into the test's own context


def test_push_front_plays_whole_pieces_before_what_was_queued() -> None:
    p, frames, texts, _ = _playout()
    reply = p.start_segment("The answer.", 4)
    p.append(reply, b"\x01" * FRAME)
    p.pause()  # a filler cuts in line like any new agent audio: it plays at once
    p.push_front([("Let me see.", b"\x02" * FRAME), ("One moment.", b"\x03" * 10)], 4)
    while p.tick():
        pass
    assert texts == ["Let me see.", "One moment.", "The answer."]
    assert [f[0] for f in frames] == [2, 3, 1]
    assert frames[1][10:] == b"\x00" * (FRAME - 10)  # a whole piece: its last frame padded


def test_push_front_queues_nothing_for_a_closed_turn() -> None:
    p, _, _, _ = _playout()
    p.clear(close_turn=5)
    p.push_front([("Let me see.", b"\x02" * FRAME)], 5)
    assert not p.busy


def test_drop_takes_out_only_the_given_segments_and_keeps_a_pause() -> None:
    p, frames, texts, _ = _playout()
    filler = p.queue_whole("Let me see.", b"\x02" * FRAME, 6)
    failed = p.start_segment("Half an answ", 6)
    p.append(failed, b"\x01" * FRAME)
    later = p.queue_whole("Bye.", b"\x03" * FRAME, 7)
    p.pause()
    p.drop([failed])
    assert p.paused and not p.tick()
    p.resume()
    while p.tick():
        pass
    assert texts == ["Let me see.", "Bye."] and [f[0] for f in frames] == [2, 3]
    assert filler.complete and later.complete
