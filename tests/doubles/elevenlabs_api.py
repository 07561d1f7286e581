"""A double of ElevenLabs' streaming TTS endpoint, for tests only: a real HTTP server on loopback
(aiohttp) that the elevenlabs SDK's ``text_to_speech.stream`` talks to unchanged.

``POST /v1/text-to-speech/{voice_id}/stream?output_format=pcm_<rate>`` with header
``xi-api-key`` and a JSON body (``text``, ``model_id``, ``voice_settings``...) answers with a
chunked body of raw PCM16: the same text-coded audio as the Deepgram double
(``tests.doubles.deepgram_speak.text_audio``), so tests can hear the words.

Faults are per request, test-controlled: ``double.faults`` is a FIFO consumed by each request
(``Fault()`` = behave): an error status (429 with ``retry_after``, 5xx) with ElevenLabs' JSON
error body, a slow first byte (``first_byte_delay_s``, before the status line), or a
disconnect mid-body (``drop_after_bytes``: the TCP connection is cut, so the chunked body is
incomplete). ``latency_s`` delays every response (the bench's fixed latency); ``pace_s``
spaces the chunks of a body. Every request is
recorded (``double.requests``).
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.doubles.deepgram_speak import text_audio


@dataclass
class Fault:
    status: int = 0
    retry_after: str = ""
    first_byte_delay_s: float = 0.0
    drop_after_bytes: int = -1


@dataclass
class Seen:
    """One request as the double received it."""

    voice_id: str
    query: dict[str, str]
    headers: dict[str, str]
    body: dict[str, Any]
    status: int = 200
    audio_bytes: int = 0
    completed: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return self.headers.get("xi-api-key", "")

    @property
    def text(self) -> str:
        return str(self.body.get("text", ""))

    @property
    def model(self) -> str:
        return str(self.body.get("model_id", ""))


class ElevenLabsDouble:
    """The streaming endpoint on 127.0.0.1; ``async with`` starts and stops it."""

    def __init__(
        self,
        *,
        latency_s: float = 0.0,
        chunk_bytes: int = 3200,
        pace_s: float = 0.0,
        keys: set[str] | None = None,
    ) -> None:
        self.latency_s = latency_s
        self.pace_s = pace_s  # between chunks, as a provider generating in real time would
        self.chunk_bytes = chunk_bytes
        self.keys = keys
        self.faults: deque[Fault] = deque()
        self.requests: list[Seen] = []
        self.active = 0
        self.peak_active = 0
        self._runner: web.AppRunner | None = None
        self._port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    async def __aenter__(self) -> ElevenLabsDouble:
        app = web.Application()
        app.router.add_post("/v1/text-to-speech/{voice_id}/stream", self._stream)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self._port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def texts(self) -> list[str]:
        return [r.text for r in self.requests]

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        seen = Seen(
            voice_id=request.match_info["voice_id"],
            query=dict(request.query),
            headers={k.lower(): v for k, v in request.headers.items()},
            body=json.loads(await request.read() or b"{}"),
        )
        self.requests.append(seen)
        fault = self.faults.popleft() if self.faults else Fault()
        if self.keys is not None and seen.key not in self.keys:
            return self._error(seen, 401, "", "invalid_api_key")
        if fault.status:
            return self._error(seen, fault.status, fault.retry_after, "double_fault")
        fmt = seen.query.get("output_format", "mp3_44100_128")
        if not fmt.startswith("pcm_"):
            return self._error(seen, 422, "", "the double only speaks pcm_<rate>")
        rate = int(fmt.removeprefix("pcm_"))
        self.active += 1
        self.peak_active = max(self.peak_active, self.active)
        try:
            delay = self.latency_s + fault.first_byte_delay_s
            if delay:
                await asyncio.sleep(delay)
            response = web.StreamResponse(headers={"Content-Type": "audio/pcm", "request-id": "double"})
            await response.prepare(request)
            audio = text_audio(seen.text, rate)
            for i in range(0, len(audio), self.chunk_bytes):
                chunk = audio[i : i + self.chunk_bytes]
                if 0 <= fault.drop_after_bytes < seen.audio_bytes + len(chunk):
                    await response.write(chunk[: max(0, fault.drop_after_bytes - seen.audio_bytes)])
                    seen.audio_bytes = fault.drop_after_bytes
                    await asyncio.sleep(0.05)  # a reset can discard what the client has not read
                    assert request.transport is not None
                    request.transport.abort()  # the body ends without its last chunk marker
                    return response
                await response.write(chunk)
                seen.audio_bytes += len(chunk)
                if self.pace_s:
                    await asyncio.sleep(self.pace_s)
            await response.write_eof()
            seen.completed = True
            return response
        except ConnectionResetError:  # the client went away (cancelled, or gave up waiting)
            return web.Response(status=499)
        finally:
            self.active -= 1

    def _error(self, seen: Seen, status: int, retry_after: str, code: str) -> web.Response:
        seen.status = status
        headers = {"Retry-After": retry_after} if retry_after else {}
        body = {"detail": {"status": code, "message": f"double answered {status}"}}
        return web.json_response(body, status=status, headers=headers)
