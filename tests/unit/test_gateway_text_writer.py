"""TextWriter: LLM text into the TTS stream as it arrives, bursts coalesced, input ended last."""

from __future__ import annotations

import asyncio

from gateway.session.reply import MAX_TEXT_CHARS, TextWriter


class _Call:
    def __init__(self) -> None:
        self.texts: list[str] = []
        self.ended = False

    async def write_text(self, text: str) -> None:
        assert not self.ended
        await asyncio.sleep(0.001)  # a write in flight
        self.texts.append(text)

    async def end_input(self) -> None:
        self.ended = True


async def test_first_text_at_once_then_what_arrived_meanwhile() -> None:
    call = _Call()
    writer = TextWriter(call)
    task = asyncio.get_running_loop().create_task(writer.run())
    writer.push("Sure thing. ")
    await asyncio.sleep(0)  # the first write starts
    for token in ("I can ", "help ", "with ", "that."):
        writer.push(token)
    writer.end()
    await asyncio.wait_for(task, 1)
    assert call.texts == ["Sure thing. ", "I can help with that."] and call.ended


async def test_push_and_end_before_the_writer_runs() -> None:
    call = _Call()
    writer = TextWriter(call)
    writer.push("Hello.")
    writer.end()
    await asyncio.wait_for(writer.run(), 1)
    assert call.texts == ["Hello."] and call.ended


async def test_a_long_burst_is_split_under_the_message_limit() -> None:
    call = _Call()
    writer = TextWriter(call)
    for _ in range(30):
        writer.push("x" * 100)
    writer.end()
    await asyncio.wait_for(writer.run(), 1)
    assert "".join(call.texts) == "x" * 3000
    assert all(len(t) <= MAX_TEXT_CHARS for t in call.texts) and len(call.texts) == 3
