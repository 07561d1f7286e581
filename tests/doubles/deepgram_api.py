"""A double of Deepgram's streaming listen API (``/v1/listen`` websocket), for the real SDK client.

It really transcribes: audio is heard as tone words (``tests.doubles.tone_words``), so a test can
check that no word was lost, repeated or reordered across a fallback. What it speaks is enough
of the protocol for ``deepgram-sdk``: ``Results`` (interim and ``is_final``/``speech_final``,
words with start/end seconds, ``channel.alternatives``), ``SpeechStarted`` (``vad_events``),
``UtteranceEnd`` (``utterance_end_ms``), ``Metadata`` on close; it honours ``KeepAlive``,
``Finalize`` and ``CloseStream``. Like the real service it sends an empty final for each second
of silence, so a client's inactivity deadline sees a live stream.

Faults are per connection, test-controlled: ``double.faults.append(ListenFault(...))`` is taken
by the next handshake (429 with Retry-After, 5xx, slow first result, disconnect or stall after
N words).
Every handshake is recorded (path, query parameters, Authorization header).

``ToneWordsRecognizer`` is a light stand-in for stt_svc's local engine (a ``Recognizer`` over the
same ear), so chain tests need no Whisper model. The speak API double lives in
``tests.doubles.deepgram_speak``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from stt_svc.providers.base import (
    Final,
    Interim,
    RecognitionEvent,
    RecognitionOptions,
    SpeechStarted,
    UtteranceEnd,
    Word,
)
from tests.doubles.tone_words import FRAME_MS, MIN_WORD_FRAMES, WORDS

# ---------------------------------------------------------------------------- the ear


@dataclass(frozen=True, slots=True)
class HeardWord:
    word: str
    start_ms: int
    end_ms: int


@dataclass(frozen=True, slots=True)
class Onset:
    at_ms: int


@dataclass(frozen=True, slots=True)
class WordDone:
    word: HeardWord


@dataclass(frozen=True, slots=True)
class Endpoint:
    """``endpointing_ms`` of silence after the last word: the pending words are final."""

    at_ms: int


@dataclass(frozen=True, slots=True)
class UtteranceOver:
    last_word_end_ms: int


@dataclass(frozen=True, slots=True)
class Quiet:
    """A stretch of silence with no words pending (a real recognizer sends an empty final)."""

    at_ms: int


EarEvent = Onset | WordDone | Endpoint | UtteranceOver | Quiet


class ToneEar:
    """Hears tone words in 20 ms frames of PCM16, whatever the message boundaries."""

    def __init__(
        self, rate: int, endpointing_ms: int, utterance_end_ms: int = 1000, quiet_every_ms: int = 1000
    ) -> None:
        self.rate = rate
        self.frame_bytes = rate * FRAME_MS // 1000 * 2
        self.endpointing_ms = endpointing_ms
        self.utterance_end_ms = utterance_end_ms
        self.quiet_every_ms = quiet_every_ms
        self.pos_ms = 0
        self.segment_start_ms = 0  # where the next final's range starts
        self.pending: list[HeardWord] = []  # heard, not yet final
        self.in_speech = False  # since the onset, until the endpoint
        self.utterance_open = False  # words since the last UtteranceOver
        self.last_word_end_ms = 0
        self.last_voice_ms = 0
        self._run: tuple[int, int, int] = (-1, 0, 0)  # (word index, frames, start ms)
        self._buf = bytearray()

    def feed(self, pcm: bytes) -> list[EarEvent]:
        self._buf += pcm
        out: list[EarEvent] = []
        n = len(self._buf) // self.frame_bytes * self.frame_bytes
        if not n:
            return out
        samples = np.frombuffer(bytes(self._buf[:n]), dtype=np.int16).astype(np.float32)
        del self._buf[:n]
        for frame in samples.reshape(-1, self.frame_bytes // 2):
            self._hear(frame, out)
        return out

    def cut(self) -> tuple[list[HeardWord], int, int]:
        """Finalize / close: the pending words, and the range they are final for."""
        self._close_run([])
        words, start = self.pending, self.segment_start_ms
        self.pending = []
        self.segment_start_ms = self.pos_ms
        return words, start, self.pos_ms

    def _close_run(self, out: list[EarEvent]) -> None:
        index, frames, start = self._run
        self._run = (-1, 0, 0)
        if index >= 0 and frames >= MIN_WORD_FRAMES:
            word = HeardWord(WORDS[index], start, start + frames * FRAME_MS)
            self.pending.append(word)
            self.last_word_end_ms = word.end_ms
            self.utterance_open = True
            out.append(WordDone(word))

    def _hear(self, frame: np.ndarray, out: list[EarEvent]) -> None:
        start = self.pos_ms
        self.pos_ms += FRAME_MS
        if float(np.sqrt(np.mean(frame**2))) > 1000:
            freq = float(np.argmax(np.abs(np.fft.rfft(frame)))) * self.rate / len(frame)
            index = min(len(WORDS) - 1, max(0, round((freq - 400.0) / 100.0)))
            self.last_voice_ms = self.pos_ms
            if not self.in_speech:
                self.in_speech = True
                out.append(Onset(start))
            if self._run[0] == index:
                self._run = (index, self._run[1] + 1, self._run[2])
            else:
                self._close_run(out)
                self._run = (index, 1, start)
            return
        self._close_run(out)
        silent_ms = self.pos_ms - self.last_word_end_ms
        if self.in_speech and self.pos_ms - self.last_voice_ms >= self.endpointing_ms:
            self.in_speech = False  # a click with no word in it ends quietly
            if self.pending and silent_ms >= self.endpointing_ms:
                out.append(Endpoint(self.pos_ms))
        elif self.utterance_open and not self.in_speech and silent_ms >= self.utterance_end_ms:
            self.utterance_open = False
            out.append(UtteranceOver(self.last_word_end_ms))
        elif (
            not self.in_speech
            and not self.pending
            and self.pos_ms - self.segment_start_ms >= self.quiet_every_ms
        ):
            out.append(Quiet(self.pos_ms))


# ---------------------------------------------------------------------------- the websocket double


@dataclass
class ListenFault:
    """What the next connection does wrong (one fault object per handshake)."""

    status: int = 0  # refuse the handshake with this HTTP status (429, 500, 503, ...)
    retry_after_s: float | None = None  # sent as Retry-After with ``status``
    first_result_delay_s: float = 0.0  # hold every message until this long after the first one
    # Drop the TCP connection when a word beyond the first N is heard (N words are delivered).
    disconnect_after_words: int | None = None
    # Send nothing more once a word beyond the first N is heard; the connection stays open.
    stall_after_words: int | None = None
    # After CloseStream: "close" (the final, Metadata, then the close handshake, as Deepgram
    # does), "hold" (the final and Metadata, the connection left open), "mute" (the final
    # only, the connection left open) or "garbage" (a text frame that is not JSON, then as
    # "close" without the final).
    after_close_stream: str = "close"


@dataclass
class ListenRequest:
    """One handshake as the double saw it."""

    path: str
    query: dict[str, list[str]]
    authorization: str | None
    status: int  # 101, or the status it was refused with
    control: list[str] = field(default_factory=list)  # KeepAlive, Finalize, CloseStream received
    audio_bytes: int = 0
    # perf_counter at the first audio message in and the first message out: the time the double
    # itself held the stream (its latency and its own work), for the benchmark to subtract.
    first_audio_at: float | None = None
    first_sent_at: float | None = None

    def param(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[0] if values else None


class DeepgramListenDouble:
    """A loopback ``/v1/listen`` server. ``latency_s`` delays every message it sends (fixed)."""

    def __init__(
        self, latency_s: float = 0.0, keep_requests: int = 1000, tls: ssl.SSLContext | None = None
    ) -> None:
        self.latency_s = latency_s
        self.tls = tls  # a server context: serve wss:// instead of ws://
        self.faults: deque[ListenFault] = deque()
        self.requests: deque[ListenRequest] = deque(maxlen=keep_requests)  # the latest handshakes
        self.finals: list[str] = []  # non-empty final transcripts sent, across connections
        self.open = 0
        self._server: Server | None = None
        self._pending_fault: dict[int, ListenFault] = {}
        self.url = ""

    async def __aenter__(self) -> DeepgramListenDouble:
        self._server = await serve(
            self._handle, "127.0.0.1", 0, process_request=self._handshake, ssl=self.tls
        )
        port = next(iter(self._server.sockets)).getsockname()[1]
        self.url = f"{'wss' if self.tls else 'ws'}://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def _handshake(self, conn: ServerConnection, request: Request) -> Response | None:
        split = urlsplit(request.path)
        fault = self.faults.popleft() if self.faults else ListenFault()
        status = 101 if split.path == "/v1/listen" else 404
        status = fault.status or status
        self.requests.append(
            ListenRequest(split.path, parse_qs(split.query), request.headers.get("Authorization"), status)
        )
        if status != 101:
            headers = Headers()
            if fault.retry_after_s is not None:
                headers["Retry-After"] = f"{fault.retry_after_s:g}"
            response = conn.respond(status, f"refused by the double ({status})\n")
            response.headers.update(headers)
            return response
        self._pending_fault[id(conn)] = fault
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        fault = self._pending_fault.pop(id(ws), ListenFault())
        record = self.requests[-1]
        q = record.query
        session = _ListenSession(self, ws, record, fault, q)
        self.open += 1
        try:
            await session.run()
        except ConnectionClosed:
            pass  # the client went away without a close frame (a cancelled or failed-over stream)
        finally:
            self.open -= 1


class _ListenSession:
    def __init__(
        self,
        double: DeepgramListenDouble,
        ws: ServerConnection,
        record: ListenRequest,
        fault: ListenFault,
        q: dict[str, list[str]],
    ) -> None:
        def flag(name: str) -> bool:
            return (q.get(name) or ["false"])[0] == "true"

        self.double, self.ws, self.record, self.fault = double, ws, record, fault
        rate = int((q.get("sample_rate") or ["16000"])[0])
        endpointing = int((q.get("endpointing") or ["10"])[0])
        self.ear = ToneEar(rate, endpointing, int((q.get("utterance_end_ms") or ["1000"])[0]))
        self.interim = flag("interim_results")
        self.vad_events = flag("vad_events")
        self.words_heard = 0
        self.stalled = False
        self._out: asyncio.Queue[tuple[float, str] | None] = asyncio.Queue()
        self._first_sent: float | None = None

    async def run(self) -> None:
        sender = asyncio.create_task(self._send_loop(), name="dg-double-send")
        try:
            async for message in self.ws:
                if isinstance(message, bytes):
                    if self.record.first_audio_at is None:
                        self.record.first_audio_at = time.perf_counter()
                    self.record.audio_bytes += len(message)
                    if self._on_audio(message):
                        # Mid-stream disconnect: what was already said is delivered, then the
                        # TCP connection closes with no close frame (an abnormal closure).
                        self._out.put_nowait(None)
                        await asyncio.wait_for(asyncio.shield(sender), 10)
                        self.ws.transport.close()
                        return
                    continue
                kind = json.loads(message).get("type", "")
                self.record.control.append(kind)
                if self.stalled:
                    continue  # hung: not even CloseStream gets an answer
                if kind == "Finalize":
                    self._final(speech_final=False, from_finalize=True)
                elif kind == "CloseStream":
                    if self.fault.after_close_stream == "garbage":
                        self._out.put_nowait((time.monotonic(), "<html>bad gateway</html>"))
                    else:
                        self._final(speech_final=False)
                    if self.fault.after_close_stream == "mute":
                        continue
                    self._put(
                        {"type": "Metadata", "request_id": "double", "duration": self.ear.pos_ms / 1000}
                    )
                    if self.fault.after_close_stream == "hold":
                        continue
                    self._out.put_nowait(None)
                    closed = asyncio.ensure_future(self.ws.wait_closed())
                    try:  # the client may hang up first (a deadline it gave up on)
                        await asyncio.wait([sender, closed], return_when=asyncio.FIRST_COMPLETED)
                    finally:
                        closed.cancel()
                    await self.ws.close()
                    return
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender

    def _on_audio(self, pcm: bytes) -> bool:
        """Hear ``pcm``; True when the injected disconnect is due."""
        for event in self.ear.feed(pcm):
            if isinstance(event, Onset) and self.vad_events:
                self._put({"type": "SpeechStarted", "channel": [0, 1], "timestamp": event.at_ms / 1000})
            elif isinstance(event, WordDone):
                self.words_heard += 1
                if (
                    self.fault.disconnect_after_words is not None
                    and self.words_heard > self.fault.disconnect_after_words
                ):
                    return True
                if (
                    self.fault.stall_after_words is not None
                    and self.words_heard > self.fault.stall_after_words
                ):
                    self.stalled = True
                if self.interim:
                    words = self.ear.pending
                    self._results(words, self.ear.segment_start_ms, words[-1].end_ms, False, False)
            elif isinstance(event, Endpoint):
                self._final(speech_final=True)
            elif isinstance(event, UtteranceOver) and self.interim:
                self._put(
                    {
                        "type": "UtteranceEnd",
                        "channel": [0, 1],
                        "last_word_end": event.last_word_end_ms / 1000,
                    }
                )
            elif isinstance(event, Quiet):
                self._final(speech_final=False)
        return False

    def _final(self, *, speech_final: bool, from_finalize: bool = False) -> None:
        words, start, end = self.ear.cut()
        if words:
            self.double.finals.append(" ".join(w.word for w in words))
        self._results(words, start, end, True, speech_final, from_finalize)

    def _results(
        self,
        words: list[HeardWord],
        start_ms: int,
        end_ms: int,
        is_final: bool,
        speech_final: bool,
        from_finalize: bool = False,
    ) -> None:
        transcript = " ".join(w.word for w in words)
        self._put(
            {
                "type": "Results",
                "channel_index": [0, 1],
                "duration": (end_ms - start_ms) / 1000,
                "start": start_ms / 1000,
                "is_final": is_final,
                "speech_final": speech_final,
                "from_finalize": from_finalize,
                "channel": {
                    "alternatives": [
                        {
                            "transcript": transcript.capitalize() if transcript else "",
                            "confidence": 0.99 if words else 0.0,
                            "words": [
                                {
                                    "word": w.word,
                                    "start": w.start_ms / 1000,
                                    "end": w.end_ms / 1000,
                                    "confidence": 0.99,
                                    "punctuated_word": w.word,
                                }
                                for w in words
                            ],
                        }
                    ]
                },
                "metadata": {
                    "request_id": "double",
                    "model_info": {"name": "nova-3"},
                    "model_uuid": "double",
                },
            }
        )

    def _put(self, message: dict[str, Any]) -> None:
        if not self.stalled:
            self._out.put_nowait((time.monotonic(), json.dumps(message)))

    async def _send_loop(self) -> None:
        while (item := await self._out.get()) is not None:
            made, text = item
            if self._first_sent is None:
                self._first_sent = made
            due = (
                made
                + self.double.latency_s
                + max(0.0, self._first_sent + self.fault.first_result_delay_s - made)
            )
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if self.record.first_sent_at is None:
                self.record.first_sent_at = time.perf_counter()
            try:
                await self.ws.send(text)
            except ConnectionClosed:
                return


# ---------------------------------------------------------------------------- local stand-in


class ToneWordsStream:
    """A RecognizeStream over ``ToneEar``: finals ``endpointing_ms`` after the last word."""

    def __init__(self, options: RecognitionOptions, utterance_end_ms: int) -> None:
        self._options = options
        self._ear = ToneEar(16000, options.endpointing_ms, utterance_end_ms, quiet_every_ms=10**9)
        self._events: asyncio.Queue[RecognitionEvent | None] = asyncio.Queue()
        self._in_utterance = False
        self._ended = False

    async def push_audio(self, pcm16: bytes) -> None:
        if self._ended:
            return
        for event in self._ear.feed(pcm16):
            if isinstance(event, Onset) and not self._in_utterance:
                self._in_utterance = True
                self._events.put_nowait(SpeechStarted(event.at_ms))
            elif isinstance(event, WordDone) and self._options.interim_results:
                pending = self._ear.pending
                self._events.put_nowait(
                    Interim(" ".join(w.word for w in pending), pending[0].start_ms, pending[-1].end_ms)
                )
            elif isinstance(event, Endpoint):
                self._final(speech_final=True)

    def _final(self, *, speech_final: bool) -> None:
        words, _start, _end = self._ear.cut()
        if words:
            self._events.put_nowait(
                Final(
                    " ".join(w.word for w in words),
                    1.0,
                    tuple(Word(w.word, w.start_ms, w.end_ms, 1.0) for w in words),
                    words[0].start_ms,
                    words[-1].end_ms,
                    speech_final,
                )
            )
        if self._in_utterance and (speech_final or self._ended):
            self._in_utterance = False
            self._events.put_nowait(UtteranceEnd(self._ear.last_word_end_ms))

    async def finalize(self) -> None:
        self._final(speech_final=False)

    async def end_input(self) -> None:
        if not self._ended:
            self._ended = True
            self._final(speech_final=False)
            self._events.put_nowait(None)

    async def events(self) -> AsyncIterator[RecognitionEvent]:
        while (event := await self._events.get()) is not None:
            yield event

    async def aclose(self) -> None:
        self._ended = True
        self._events.put_nowait(None)


class ToneWordsRecognizer:
    """Stand-in for the local engine in chain tests and the bench; counts its streams."""

    name = "tone-words"

    def __init__(self, utterance_end_ms: int = 1000) -> None:
        self.utterance_end_ms = utterance_end_ms
        self.opened = 0

    async def open(self, options: RecognitionOptions) -> ToneWordsStream:
        self.opened += 1
        return ToneWordsStream(options, self.utterance_end_ms)
