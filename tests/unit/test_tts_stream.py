"""SynthesisStream: order, pipelining one piece ahead, flush markers, errors and cancellation."""

from __future__ import annotations

import asyncio

import pytest

from common.errors import EngineError, Unavailable
from tts_svc.providers.base import SynthesisOptions
from tts_svc.stream import AudioSegment, FlushDone, SynthesisStream


class ScriptedEngine:
    """Each piece's audio is its text as bytes; the test can hold pieces and see what started."""

    name = "scripted"
    sample_rate = 16000
    voices = ("scripted",)

    def __init__(self) -> None:
        self.started: list[str] = []
        self.finished: list[str] = []
        self.cancelled: list[str] = []
        self.gate: asyncio.Event | None = None
        self.fail_on = ""
        self.error: Exception = ValueError("engine broke")

    async def synthesize(self, text: str, options: SynthesisOptions) -> bytes:
        self.started.append(text)
        try:
            if self.gate is not None:
                await self.gate.wait()
            await asyncio.sleep(0.001 * (len(self.started) % 3))  # uneven latency
        except asyncio.CancelledError:
            self.cancelled.append(text)
            raise
        if text == self.fail_on:
            raise self.error
        self.finished.append(text)
        return text.encode()


def open_stream(engine: ScriptedEngine) -> SynthesisStream:
    return SynthesisStream(engine, SynthesisOptions(), name="tts-test")  # type: ignore[arg-type]


async def settle() -> None:
    """Long enough for every runnable step (the scripted latencies are at most 2 ms)."""
    await asyncio.sleep(0.05)


async def collect(stream: SynthesisStream) -> list[AudioSegment | FlushDone]:
    return [event async for event in stream]


async def test_events_come_in_input_order_with_flush_markers() -> None:
    stream = open_stream(ScriptedEngine())
    for token in ["Hello", " there.", " How are", " you? Fine", " thanks"]:
        stream.push_text(token)
    stream.flush()
    stream.push_text("Bye. ")
    stream.flush()
    stream.end_input()
    events = await collect(stream)
    await stream.aclose()
    assert events == [
        AudioSegment(b"Hello there.", "Hello there."),
        AudioSegment(b"How are you?", "How are you?"),
        AudioSegment(b"Fine thanks", "Fine thanks"),
        FlushDone(len("Hello there. How are you? Fine thanks")),
        AudioSegment(b"Bye.", "Bye."),
        FlushDone(len("Hello there. How are you? Fine thanks") + 5),
    ]


async def test_a_piece_starts_as_soon_as_it_is_complete_and_runs_one_ahead_of_the_reader() -> None:
    engine = ScriptedEngine()
    stream = open_stream(engine)
    stream.push_text("One. Two. Three. Four. Five")
    await settle()
    # Nobody reads: "One." is done and waits in the one-slot queue, "Two." is synthesized and
    # waits to be queued; "Three." has not started (the stream stays one piece ahead).
    assert engine.finished == ["One.", "Two."]
    assert stream.pending_chars == len("Three.") + len("Four.") + len(" Five")
    assert await anext(stream) == AudioSegment(b"One.", "One.")
    await settle()
    assert engine.finished == ["One.", "Two.", "Three."]
    await stream.aclose()


async def test_aclose_cancels_the_running_piece_and_queued_ones_never_start() -> None:
    engine = ScriptedEngine()
    engine.gate = asyncio.Event()
    stream = open_stream(engine)
    stream.push_text("One. Two. Three. Four. ")
    await settle()
    assert engine.started == ["One."]
    await stream.aclose()
    assert engine.cancelled == ["One."]
    engine.gate.set()
    await settle()
    assert engine.started == ["One."]
    assert [t for t in asyncio.all_tasks() if t.get_name() == "tts-test"] == []
    assert await collect(stream) == []  # iteration ends at once after close


async def test_aclose_wakes_a_waiting_reader() -> None:
    stream = open_stream(ScriptedEngine())
    reader = asyncio.create_task(collect(stream), name="test-reader")
    await settle()
    await stream.aclose()
    assert await asyncio.wait_for(reader, 1) == []


async def test_engine_failure_surfaces_as_engine_error_without_the_text() -> None:
    engine = ScriptedEngine()
    engine.fail_on = "Two."
    stream = open_stream(engine)
    stream.push_text("One. Two. Three. ")
    stream.end_input()
    assert await anext(stream) == AudioSegment(b"One.", "One.")
    with pytest.raises(EngineError) as info:
        await anext(stream)
    assert "Two" not in info.value.message and "ValueError" in info.value.message
    with pytest.raises(StopAsyncIteration):
        await anext(stream)
    await stream.aclose()


async def test_an_engine_s_own_status_error_passes_through() -> None:
    engine = ScriptedEngine()
    engine.fail_on, engine.error = "One.", Unavailable("the voice service is down; retry")
    stream = open_stream(engine)
    stream.push_text("One. ")
    with pytest.raises(Unavailable):
        await anext(stream)
    await stream.aclose()


async def test_text_after_end_input_is_a_programming_error() -> None:
    stream = open_stream(ScriptedEngine())
    stream.end_input()
    with pytest.raises(RuntimeError):
        stream.push_text("late")
    assert await collect(stream) == []
    await stream.aclose()


async def test_empty_flushes_still_answer_and_count_as_pending_until_answered() -> None:
    stream = open_stream(ScriptedEngine())
    stream.flush()
    stream.flush()
    assert stream.pending_chars in (1, 2)  # the runner may already hold the first marker
    stream.end_input()
    assert await collect(stream) == [FlushDone(0), FlushDone(0)]
    assert stream.pending_chars == 0
    await stream.aclose()
