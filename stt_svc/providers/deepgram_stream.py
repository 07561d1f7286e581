"""One Deepgram listen stream: audio out as binary media messages, Deepgram's JSON messages in
as Recognizer events, offsets in ms from the start of the stream.

Deadlines end the stream with ``ProviderError(kind="timeout")``: the first message after audio
was sent, and silence from Deepgram while audio is unanswered or, after ``CloseStream``, until
the stream's end (its ``Metadata`` or the socket's close). ``KeepAlive`` goes out while no
audio flows (Deepgram closes a stream idle for ~10 s).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from deepgram.listen.v1.socket_client import AsyncV1SocketClient
from websockets.exceptions import ConnectionClosed

from common.providers import CloseOnce, ProviderError
from common.tasks import cancel_and_wait
from stt_svc.providers.base import (
    Final,
    Interim,
    RecognitionEvent,
    RecognitionOptions,
    SpeechStarted,
    UtteranceEnd,
    Word,
)

MAX_EVENTS_QUEUED = 256  # a caller this far behind is not reading: the stream fails
# Closing waits for Deepgram's close frame (a client waits up to 5x this): a caller that hung up
# must not wait long behind a provider that stopped answering.
CLOSE_TIMEOUT_S = 0.4


@dataclass(frozen=True, slots=True)
class StreamTimings:
    """A Deepgram stream's deadlines and keepalive period, in seconds."""

    first_result_s: float = 3.0
    inactivity_s: float = 10.0
    keepalive_s: float = 4.0


def _ms(seconds: float | None) -> int:
    return round((seconds or 0.0) * 1000)


class DeepgramStream:
    """One listen websocket: owns it, its reader and keep-alive tasks, and its event queue."""

    def __init__(
        self,
        socket: AsyncV1SocketClient,
        stack: contextlib.AsyncExitStack,
        options: RecognitionOptions,
        timings: StreamTimings,
        on_endpoint_failure: Callable[[], None],
    ) -> None:
        self._socket = socket
        self._stack = stack
        ws = getattr(socket, "_websocket", None)
        if ws is not None and hasattr(ws, "close_timeout"):
            ws.close_timeout = CLOSE_TIMEOUT_S
        self._options = options
        self._timings = timings
        self._on_endpoint_failure = on_endpoint_failure
        self._loop = asyncio.get_running_loop()
        self._events: asyncio.Queue[RecognitionEvent | None] = asyncio.Queue()
        self._failure: BaseException | None = None
        self._closing = False  # CloseStream sent: the socket closing is the normal end
        self._closer = CloseOnce(self._close, "stt-deepgram-close")
        self._heard = False  # any message received yet
        self._watchdog: asyncio.TimerHandle | None = None  # armed while a reply is outstanding
        self._last_sent = self._loop.time()
        self._sending = 0  # sends in progress
        self._in_utterance = False
        self._last_word_end_ms = 0
        self._ended = False
        self.key_label = ""  # "default" or "tenant": which key this stream bills (set by its opener)
        self._reader = self._loop.create_task(self._read(), name="stt-deepgram-read")
        self._keepalive = self._loop.create_task(self._keep_alive(), name="stt-deepgram-keepalive")

    # ------------------------------------------------------------------ RecognizeStream
    async def push_audio(self, pcm16: bytes) -> None:
        if self._reader.done() or self._closing:
            return  # failed or ended: events() says so
        await self._send(self._socket.send_media(pcm16))

    async def finalize(self) -> None:
        if not self._reader.done() and not self._closing:
            await self._send(self._socket.send_finalize())

    async def end_input(self) -> None:
        if not self._reader.done() and not self._closing:
            self._closing = True
            await self._send(self._socket.send_close_stream())

    async def events(self) -> AsyncIterator[RecognitionEvent]:
        while (event := await self._events.get()) is not None:
            yield event
        if self._failure is not None:
            raise self._failure

    async def aclose(self) -> None:
        """Idempotent; finishes even if the caller is cancelled (the socket and the cap slot go)."""
        await self._closer()

    async def _close(self) -> None:
        self._disarm()
        await cancel_and_wait(self._reader, self._keepalive)
        self._end_events()
        ws = getattr(self._socket, "_websocket", None)
        if isinstance(self._failure, ProviderError) and self._failure.kind == "timeout" and ws is not None:
            ws.transport.abort()  # it stopped answering: no close handshake to wait for
        with contextlib.suppress(ConnectionClosed, OSError):  # it is gone either way
            await self._stack.aclose()  # closes the websocket, frees the endpoint and the cap slot

    # ------------------------------------------------------------------ sending
    async def _send(self, sending: Any) -> None:
        self._last_sent = self._loop.time()
        self._arm()
        self._sending += 1
        try:
            await sending
        except ConnectionClosed:
            pass  # the reader sees the same closure and reports it
        finally:
            self._sending -= 1

    async def _keep_alive(self) -> None:
        interval = self._timings.keepalive_s
        while True:
            await asyncio.sleep(max(0.05, self._last_sent + interval - self._loop.time()))
            if self._loop.time() - self._last_sent >= interval and not self._closing:
                self._last_sent = self._loop.time()
                with contextlib.suppress(ConnectionClosed):
                    await self._socket.send_keep_alive()

    def _arm(self) -> None:
        if self._watchdog is None:
            limit = self._timings.inactivity_s if self._heard else self._timings.first_result_s
            self._watchdog = self._loop.call_later(limit, self._expire, limit)

    def _disarm(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None

    def _expire(self, limit: float) -> None:
        self._watchdog = None
        what = "first-result" if not self._heard else "inactivity"
        self._fail(
            ProviderError(
                f"Deepgram sent nothing for {limit:g} s after audio ({what} deadline)", kind="timeout"
            )
        )
        self._on_endpoint_failure()

    def _fail(self, error: ProviderError) -> None:
        if self._failure is None and not self._reader.done():
            self._failure = error
            self._reader.cancel()

    # ------------------------------------------------------------------ receiving
    async def _messages(self) -> AsyncIterator[dict[str, Any]]:
        """Deepgram's messages as JSON objects. Read from the SDK socket's websocket: the SDK's
        own iterator builds pydantic models through a Union (measured: ~470 us per Results
        message, ~70 us per SpeechStarted; ``json.loads`` takes ~15 us)."""
        ws = getattr(self._socket, "_websocket", None)
        if ws is None:  # an SDK without it: its models, slower but the same fields
            async for model in self._socket:
                if not isinstance(model, bytes):
                    yield model.dict() if hasattr(model, "dict") else dict(model)
            return
        async for frame in ws:
            if isinstance(frame, str):
                yield json.loads(frame)

    async def _read(self) -> None:
        try:
            async for message in self._messages():
                self._heard = True
                self._disarm()
                if self._closing or self._sending:
                    # Still owed: the end of the stream, or a send Deepgram has not taken yet
                    # (its read side stuck while results for earlier audio still come).
                    self._arm()
                kind = message.get("type")
                if kind == "Results":
                    self._on_results(message)
                elif kind == "SpeechStarted":
                    self._start_utterance(_ms(message.get("timestamp")))
                elif kind == "UtteranceEnd":
                    self._end_utterance(_ms(message.get("last_word_end")))
                elif kind == "Metadata" and self._closing:
                    break  # Deepgram's last message after CloseStream: the socket need not close
                elif kind == "Error":
                    raise ProviderError(
                        f"Deepgram reported an error: {str(message.get('description'))[:200]}"
                    )
            if not self._closing:
                raise ProviderError("Deepgram closed the stream before it ended", kind="disconnect")
        except ConnectionClosed as e:
            self._failure = self._failure or ProviderError(
                f"the Deepgram connection dropped (code {e.rcvd.code if e.rcvd else 1006})", kind="disconnect"
            )
            self._on_endpoint_failure()
        except ProviderError as e:
            self._failure = self._failure or e
        except Exception as e:  # a message this client cannot read: a failure, not an end
            self._failure = self._failure or ProviderError(
                f"Deepgram sent a message this client cannot read ({type(e).__name__})", kind="protocol"
            )
        finally:
            self._disarm()
            self._keepalive.cancel()
            self._end_events()

    def _emit(self, event: RecognitionEvent) -> None:
        if self._events.qsize() >= MAX_EVENTS_QUEUED:
            raise ProviderError(
                "recognition results are not being read; the stream was closed", fallback=False
            )
        self._events.put_nowait(event)

    def _end_events(self) -> None:
        if not self._ended:
            self._ended = True
            self._events.put_nowait(None)

    def _start_utterance(self, offset_ms: int) -> None:
        if not self._in_utterance:
            self._in_utterance = True
            self._emit(SpeechStarted(offset_ms))

    def _end_utterance(self, last_word_end_ms: int) -> None:
        if self._in_utterance:
            self._in_utterance = False
            self._emit(UtteranceEnd(last_word_end_ms))

    def _on_results(self, msg: dict[str, Any]) -> None:
        alternatives = (msg.get("channel") or {}).get("alternatives") or ()
        alt = alternatives[0] if alternatives else {}
        text = (alt.get("transcript") or "").strip()
        start_ms = _ms(msg.get("start"))
        if text:
            words = tuple(
                Word(
                    w.get("punctuated_word") or w["word"],
                    _ms(w["start"]),
                    _ms(w["end"]),
                    w.get("confidence", 0.0),
                )
                for w in alt.get("words") or ()
            )
            first_ms = words[0].start_ms if words else start_ms
            last_ms = words[-1].end_ms if words else start_ms + _ms(msg.get("duration"))
            self._start_utterance(first_ms)
            if msg.get("is_final"):
                self._last_word_end_ms = last_ms
                confidence = float(alt.get("confidence") or 0.0)
                self._emit(Final(text, confidence, words, first_ms, last_ms, bool(msg.get("speech_final"))))
            elif self._options.interim_results:
                self._emit(Interim(text, first_ms, last_ms))
        if msg.get("speech_final"):
            self._end_utterance(self._last_word_end_ms)
