"""SynthesisStream: streamed text in, ordered audio segments out.

Text is segmented as it arrives and each piece is handed to the engine at once, so piece k+1
synthesizes while piece k is being sent; results are yielded strictly in order. A flush is a
marker in the same order. Closing the stream cancels whatever is still synthesizing.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

from common.errors import ResourceExhausted
from common.tasks import cancel_and_wait
from tts_svc.providers.base import SynthesisOptions, Synthesizer
from tts_svc.segmenter import Segmenter


@dataclass(frozen=True, slots=True)
class AudioSegment:
    """PCM16 at the engine's native rate, and the text it speaks."""

    pcm: bytes
    text: str


@dataclass(frozen=True, slots=True)
class FlushDone:
    characters: int


@dataclass(frozen=True, slots=True)
class _Pending:
    text: str
    task: asyncio.Task[bytes]


_END = object()


class SynthesisStream:
    """One client stream's text-to-audio pipeline (see module docstring)."""

    def __init__(
        self, engine: Synthesizer, options: SynthesisOptions, max_pending_chars: int = 65536
    ) -> None:
        self._engine = engine
        self._options = options
        self._segmenter = Segmenter()
        self._order: asyncio.Queue[object] = asyncio.Queue()
        self._tasks: list[asyncio.Task[bytes]] = []
        self._max_pending = max_pending_chars
        self._pending_chars = 0
        self.characters = 0

    def push_text(self, text: str) -> None:
        self.characters += len(text)
        for piece in self._segmenter.push(text):
            self._start(piece)
        if self._segmenter.pending + self._pending_chars > self._max_pending:
            raise ResourceExhausted(
                f"over {self._max_pending} characters are waiting to be spoken; send a flush and read"
                " the audio before sending more text"
            )

    def flush(self) -> None:
        piece = self._segmenter.flush()
        if piece:
            self._start(piece)
        self._order.put_nowait(FlushDone(self.characters))

    def end_input(self) -> None:
        self._order.put_nowait(_END)

    def _start(self, text: str) -> None:
        task = asyncio.get_running_loop().create_task(
            self._engine.synthesize(text, self._options), name="tts-synthesize"
        )
        self._tasks.append(task)
        self._pending_chars += len(text)
        self._order.put_nowait(_Pending(text, task))

    async def events(self) -> AsyncIterator[AudioSegment | FlushDone]:
        while True:
            item = await self._order.get()
            if item is _END:
                return
            if isinstance(item, FlushDone):
                yield item
                continue
            assert isinstance(item, _Pending)
            pcm = await item.task
            self._tasks.remove(item.task)
            self._pending_chars -= len(item.text)
            yield AudioSegment(pcm, item.text)

    async def aclose(self) -> None:
        await cancel_and_wait(*self._tasks)
        self._tasks.clear()
