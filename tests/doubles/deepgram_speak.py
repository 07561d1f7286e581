"""A double of Deepgram's TTS websocket (``/v1/speak``), for tests only: a real websocket server
on loopback that deepgram-sdk's ``speak.v1.connect`` talks to unchanged.

Protocol, as the SDK speaks it: query ``model``, ``encoding`` (linear16 only here),
``sample_rate``, ``speed``; header ``Authorization: Token <key>``. JSON in: ``Speak`` (text is
buffered), ``Flush`` (speak the buffer: binary audio frames, then ``Flushed``), ``Clear`` (drop
queued and in-flight audio, then ``Cleared``), ``Close``. ``Metadata`` is sent on connect.

Audio is text-coded so a test can hear what was spoken: ``text_audio`` renders each character
as ``CHAR_MS`` of a constant level ``(code + 1) * 100``; ``heard_text`` reads it back (also after
resampling, from the median level of each 10 ms). Audio length is proportional to the text.

Faults are per connection, test-controlled: ``double.faults`` is a FIFO consumed by each new
connection (``Fault()`` = behave). A fault may refuse the handshake (``status`` with
``retry_after``), hold each piece's first audio (``first_audio_delay_s``), or drop the
connection mid-stream (``drop_after_bytes`` of audio, without a close frame, or with
``drop_code``), or go silent with the connection open (``stall_after_bytes``). ``latency_s`` delays every piece's first audio (the bench's fixed latency).
Everything received is recorded per connection (``double.connections``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import urllib.parse
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

CHAR_MS = 10
LEVEL = 100


def text_audio(text: str, rate: int) -> bytes:
    """PCM16 mono: ``CHAR_MS`` per character at level ``(min(code, 255) + 1) * LEVEL``."""
    per_char = rate * CHAR_MS // 1000
    levels = np.array([(min(ord(c), 255) + 1) * LEVEL for c in text], dtype=np.int16)
    return np.repeat(levels, per_char).astype("<i2").tobytes()


def heard_text(pcm: bytes, rate: int) -> str:
    """What ``text_audio`` said, read back from PCM16 at ``rate`` (partial characters dropped)."""
    samples = np.frombuffer(pcm[: len(pcm) // 2 * 2], dtype="<i2").astype(np.int32)
    per_char = rate * CHAR_MS // 1000
    out = []
    for i in range(len(samples) // per_char):
        level = int(np.median(samples[i * per_char : (i + 1) * per_char]))
        code = round(level / LEVEL) - 1
        if 0 <= code <= 255:
            out.append(chr(code))
    return "".join(out)


@dataclass
class Fault:
    """What one connection does wrong (the defaults: nothing)."""

    status: int = 0  # refuse the handshake with this HTTP status
    retry_after: str = ""  # Retry-After header with the refusal
    first_audio_delay_s: float = 0.0  # before each piece's first audio frame
    drop_after_bytes: int = -1  # audio bytes sent on this connection before it drops
    drop_code: int = 0  # 0 = drop the TCP connection; else close with this code (e.g. 1011)
    stall_after_bytes: int = -1  # audio bytes sent before it goes silent (connection left open)
    ignore_clear: bool = False  # never answer Clear (audio goes on, no Cleared)
    garbage_after_bytes: int = -1  # audio bytes sent before one text frame that is not JSON


@dataclass
class Connection:
    """One websocket as the double saw it."""

    path: str
    query: dict[str, str]
    headers: dict[str, str]
    texts: list[str] = field(default_factory=list)  # each flushed text, in order
    messages: list[str] = field(default_factory=list)  # message types received, in order
    audio_bytes: int = 0
    closed_by_client: bool = False

    @property
    def key(self) -> str:
        return self.headers.get("authorization", "").removeprefix("Token ").strip()

    @property
    def model(self) -> str:
        return self.query.get("model", "")


class DeepgramSpeakDouble:
    """The speak endpoint on 127.0.0.1; ``async with`` starts and stops it."""

    def __init__(self, *, latency_s: float = 0.0, chunk_ms: int = 100, keys: set[str] | None = None) -> None:
        self.latency_s = latency_s
        self.chunk_ms = chunk_ms
        self.keys = keys  # None = any key is accepted
        self.faults: deque[Fault] = deque()
        self.connections: list[Connection] = []
        self.refused: list[Connection] = []
        self.open = 0  # websockets open now
        self.peak_open = 0
        self._server: Server | None = None
        self._pending: dict[int, Fault] = {}

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = next(iter(self._server.sockets)).getsockname()[:2]
        return f"ws://{host}:{port}"

    async def __aenter__(self) -> DeepgramSpeakDouble:
        self._server = await serve(self._handle, "127.0.0.1", 0, process_request=self._handshake)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    @property
    def texts(self) -> list[str]:
        """Every flushed text over all connections, in connection order."""
        return [t for c in self.connections for t in c.texts]

    # ------------------------------------------------------------------ handshake

    def _handshake(self, ws: ServerConnection, request: Request) -> Response | None:
        url = urllib.parse.urlsplit(request.path)
        seen = Connection(
            path=url.path,
            query=dict(urllib.parse.parse_qsl(url.query)),
            headers={k.lower(): v for k, v in request.headers.raw_items()},
        )
        fault = self.faults.popleft() if self.faults else Fault()
        if url.path != "/v1/speak":
            return self._refuse(ws, seen, 404, "")
        if self.keys is not None and seen.key not in self.keys:
            return self._refuse(ws, seen, 401, "")
        if fault.status:
            return self._refuse(ws, seen, fault.status, fault.retry_after)
        self._pending[id(ws)] = fault
        self.connections.append(seen)
        ws.seen = seen  # type: ignore[attr-defined]
        return None

    def _refuse(self, ws: ServerConnection, seen: Connection, status: int, retry_after: str) -> Response:
        self.refused.append(seen)
        body = json.dumps({"err_code": "REFUSED", "err_msg": f"double refused with {status}"}).encode()
        headers = Headers([("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        if retry_after:
            headers["Retry-After"] = retry_after
        return Response(status, "Refused", headers, body)

    # ------------------------------------------------------------------ session

    async def _handle(self, ws: ServerConnection) -> None:
        seen: Connection = ws.seen  # type: ignore[attr-defined]
        fault = self._pending.pop(id(ws), Fault())
        rate = int(seen.query.get("sample_rate", "24000"))
        self.open += 1
        self.peak_open = max(self.peak_open, self.open)
        work: asyncio.Queue[str | None] = asyncio.Queue()
        sender = asyncio.create_task(self._send_pieces(ws, seen, fault, rate, work), name="dg-double-send")
        try:
            await ws.send(
                json.dumps(
                    {
                        "type": "Metadata",
                        "request_id": str(uuid.uuid4()),
                        "model_name": seen.model,
                        "model_version": "double",
                        "model_uuid": str(uuid.uuid4()),
                    }
                )
            )
            buffer: list[str] = []
            clears = 0
            async for raw in ws:
                if isinstance(raw, bytes):
                    continue
                message: dict[str, Any] = json.loads(raw)
                kind = str(message.get("type", ""))
                seen.messages.append(kind)
                if kind == "Speak":
                    buffer.append(str(message.get("text", "")))
                elif kind == "Flush":
                    text = "".join(buffer)
                    buffer.clear()
                    seen.texts.append(text)
                    await work.put(text)
                elif kind == "Clear" and not fault.ignore_clear:
                    buffer.clear()
                    sender.cancel()  # drops queued and in-flight audio
                    with contextlib.suppress(asyncio.CancelledError):
                        await sender
                    work = asyncio.Queue()
                    with contextlib.suppress(ConnectionClosed):  # still read what the client sent
                        await ws.send(json.dumps({"type": "Cleared", "sequence_id": clears}))
                    clears += 1
                    sender = asyncio.create_task(
                        self._send_pieces(ws, seen, fault, rate, work), name="dg-double-send"
                    )
                elif kind == "Close":
                    seen.closed_by_client = True
                    await work.put(None)
                    with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                        await asyncio.wait_for(sender, 5)
                    await ws.close()
                    return
        except ConnectionClosed:
            pass
        finally:
            self.open -= 1
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                await sender

    async def _send_pieces(
        self, ws: ServerConnection, seen: Connection, fault: Fault, rate: int, work: asyncio.Queue[str | None]
    ) -> None:
        step = rate * 2 * self.chunk_ms // 1000
        sequence = 0
        while (text := await work.get()) is not None:
            delay = self.latency_s + fault.first_audio_delay_s
            if delay:
                await asyncio.sleep(delay)
            audio = text_audio(text, rate)
            for i in range(0, len(audio), step):
                chunk = audio[i : i + step]
                if 0 <= fault.drop_after_bytes < seen.audio_bytes + len(chunk):
                    await self._drop(ws, seen, fault, chunk)
                    return
                if 0 <= fault.stall_after_bytes < seen.audio_bytes + len(chunk):
                    await asyncio.Event().wait()  # silent until the client gives up
                if 0 <= fault.garbage_after_bytes < seen.audio_bytes + len(chunk):
                    fault.garbage_after_bytes = -1  # once; then the piece goes on as usual
                    await ws.send("<html>502 bad gateway</html>")
                await ws.send(chunk)
                seen.audio_bytes += len(chunk)
            await ws.send(json.dumps({"type": "Flushed", "sequence_id": sequence}))
            sequence += 1

    async def _drop(self, ws: ServerConnection, seen: Connection, fault: Fault, chunk: bytes) -> None:
        part = chunk[: max(0, fault.drop_after_bytes - seen.audio_bytes) // 2 * 2]
        if part:
            await ws.send(part)
            seen.audio_bytes += len(part)
        if fault.drop_code:
            await ws.close(fault.drop_code, "double dropped the stream")
        else:
            # A reset can discard what the client has not read yet: let the audio sent so far
            # arrive first, so the test knows exactly how much of the piece was heard.
            await asyncio.sleep(0.05)
            ws.transport.abort()
