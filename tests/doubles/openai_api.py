"""A double of OpenAI's chat completions API, for tests only: a real HTTP server on loopback.

It answers ``POST /v1/chat/completions`` (and Azure's ``/openai/deployments/<name>/chat/completions``)
with ``stream: true`` as OpenAI does: ``text/event-stream`` of ``data: <chunk JSON>`` events (a
role chunk, one chunk per word of the reply, tool-call fragments, a chunk with ``finish_reason``),
a usage chunk with ``choices: []`` when ``stream_options.include_usage`` is set, then
``data: [DONE]``. ``stream: false`` gets one ``chat.completion`` object.

Replies are deterministic: the next scripted ``Reply`` if the test queued one, else
``"echo: <last user message>"``. Token counts are words (prompt: words of every message).

Faults, per request and test-controlled (``fail_next`` queues them FIFO; ``always`` applies to
every request with no queued fault): HTTP status with an OpenAI error body and an optional
``Retry-After``; a slow first byte (a delay before the response headers); a disconnect after N
content chunks (the socket is dropped mid-body). ``latency_s`` is a fixed delay before the first
byte of every response, for the benchmark.

Every request is recorded (path, query, headers incl. Authorization / api-key, JSON body).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

_PIECE = re.compile(r"\s*\S+\s*")


@dataclass(frozen=True)
class Fault:
    """One injected failure: ``status`` (e.g. 429, 500, 503) with an optional ``retry_after``
    header value, or ``first_byte_delay_s`` before the headers, or a dropped connection after
    ``disconnect_after`` content chunks."""

    status: int = 0
    retry_after: str | None = None
    first_byte_delay_s: float = 0.0
    disconnect_after: int | None = None


@dataclass(frozen=True)
class ScriptedToolCall:
    id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class Reply:
    """A scripted answer: ``text`` streamed word by word, then ``tool_calls`` in fragments."""

    text: str = ""
    tool_calls: tuple[ScriptedToolCall, ...] = ()
    finish_reason: str = ""  # "" = "tool_calls" if there are any, else "stop"


@dataclass
class Received:
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: dict[str, Any]
    at: float = field(default_factory=time.monotonic)

    @property
    def authorization(self) -> str:
        return self.headers.get("authorization", "")

    @property
    def model(self) -> str:
        return str(self.body.get("model", ""))


def _words(text: str) -> list[str]:
    """Word-sized pieces that concatenate back to ``text`` (spaces travel with the word before)."""
    return _PIECE.findall(text)


def _prompt_tokens(messages: list[dict[str, Any]]) -> int:
    return sum(len(str(m.get("content") or "").split()) for m in messages)


@dataclass
class OpenAIDouble:
    """Start with ``async with OpenAIDouble() as api``; point the SDK at ``api.base_url``."""

    latency_s: float = 0.0
    chunk_delay_s: float = 0.0
    requests: list[Received] = field(default_factory=list)
    replies: deque[Reply] = field(default_factory=deque)
    faults: deque[Fault] = field(default_factory=deque)
    always: Fault | None = None
    max_recorded: int = 10_000  # a storm test sends many requests; keep the record bounded
    handled: int = 0  # requests answered (recorded or not)
    dropped: int = 0  # streams whose client went away before the end
    port: int = 0
    # Prompt caching as OpenAI does it: a prompt whose leading messages repeat an earlier
    # request's (a stable prefix) reports those tokens as cached, once they reach this many.
    cache_min_tokens: int = 1024
    _prefixes: set[str] = field(default_factory=set)
    _runner: web.AppRunner | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def azure_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _cached(self, messages: list[dict[str, Any]]) -> int:
        """Tokens of the longest leading run of whole messages an earlier request also began with."""
        cached = 0
        for n in range(1, len(messages) + 1):
            key = json.dumps(messages[:n], sort_keys=True)
            if key in self._prefixes:
                cached = _prompt_tokens(messages[:n])
            if len(self._prefixes) < 100_000:
                self._prefixes.add(key)
        return cached if cached >= self.cache_min_tokens else 0

    def fail_next(self, *faults: Fault) -> None:
        self.faults.extend(faults)

    def reply_next(self, *replies: Reply) -> None:
        self.replies.extend(replies)

    async def __aenter__(self) -> OpenAIDouble:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._handle)
        app.router.add_post("/openai/deployments/{deployment}/chat/completions", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        server = site._server  # aiohttp exposes the bound port only through the server's sockets
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # ------------------------------------------------------------------ handling

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.handled += 1
        if len(self.requests) < self.max_recorded:
            self.requests.append(
                Received(
                    request.path,
                    dict(request.query),
                    {k.lower(): v for k, v in request.headers.items()},
                    body,
                )
            )
        fault = self.faults.popleft() if self.faults else self.always
        delay = self.latency_s + (fault.first_byte_delay_s if fault else 0.0)
        if delay:
            await asyncio.sleep(delay)
        if fault is not None and fault.status:
            headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else {}
            kind = "rate_limit_exceeded" if fault.status == 429 else "server_error"
            return web.json_response(
                {"error": {"message": f"injected {fault.status}", "type": kind, "code": kind}},
                status=fault.status,
                headers=headers,
            )
        messages = body.get("messages") or []
        reply = self.replies.popleft() if self.replies else self._echo(messages)
        if not body.get("stream"):
            return web.json_response(self._whole(body, reply, messages))
        return await self._stream(request, body, reply, messages, fault)

    @staticmethod
    def _echo(messages: list[dict[str, Any]]) -> Reply:
        said = next((str(m.get("content") or "") for m in reversed(messages) if m.get("role") == "user"), "")
        return Reply(text=f"echo: {said}")

    def _chunk(self, body: dict[str, Any], delta: dict[str, Any], finish: str | None = None) -> bytes:
        chunk = {
            "id": "chatcmpl-double",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": body.get("model", ""),
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
        return b"data: " + json.dumps(chunk).encode() + b"\n\n"

    async def _stream(
        self,
        request: web.Request,
        body: dict[str, Any],
        reply: Reply,
        messages: list[dict[str, Any]],
        fault: Fault | None,
    ) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        try:
            await self._write_stream(request, resp, body, reply, messages, fault)
        except (ConnectionResetError, ConnectionError):
            self.dropped += 1  # the client closed the stream (cancel, timeout): stop writing
        return resp

    async def _write_stream(
        self,
        request: web.Request,
        resp: web.StreamResponse,
        body: dict[str, Any],
        reply: Reply,
        messages: list[dict[str, Any]],
        fault: Fault | None,
    ) -> None:
        await resp.prepare(request)
        await resp.write(self._chunk(body, {"role": "assistant", "content": ""}))
        words = _words(reply.text)
        limit = body.get("max_completion_tokens") or body.get("max_tokens") or 0
        finish = reply.finish_reason or ("tool_calls" if reply.tool_calls else "stop")
        if limit and len(words) > limit:
            words, finish = words[:limit], "length"
        for sent, piece in enumerate(self._pieces(words, reply.tool_calls)):
            if fault is not None and fault.disconnect_after is not None and sent >= fault.disconnect_after:
                # Drop the socket mid-body: the client sees an incomplete chunked response.
                assert request.transport is not None
                request.transport.abort()
                raise asyncio.CancelledError
            if self.chunk_delay_s:
                await asyncio.sleep(self.chunk_delay_s)
            await resp.write(self._chunk(body, piece))
        await resp.write(self._chunk(body, {}, finish))
        if (body.get("stream_options") or {}).get("include_usage"):
            prompt = _prompt_tokens(messages)
            usage = {
                "prompt_tokens": prompt,
                "completion_tokens": len(words),
                "total_tokens": prompt + len(words),
                "prompt_tokens_details": {"cached_tokens": self._cached(messages)},
            }
            chunk = {"id": "chatcmpl-double", "object": "chat.completion.chunk", "created": int(time.time()),
                     "model": body.get("model", ""), "choices": [], "usage": usage}  # fmt: skip
            await resp.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()

    @staticmethod
    def _pieces(words: list[str], calls: tuple[ScriptedToolCall, ...]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = [{"content": w} for w in words]
        for i, call in enumerate(calls):
            out.append(
                {
                    "tool_calls": [
                        {
                            "index": i,
                            "id": call.id,
                            "type": "function",
                            "function": {"name": call.name, "arguments": ""},
                        }
                    ]
                }  # fmt: skip
            )
            args = call.arguments
            for start in range(0, len(args), 8):  # arguments arrive in fragments, as OpenAI sends them
                out.append({"tool_calls": [{"index": i, "function": {"arguments": args[start : start + 8]}}]})
        return out

    def _whole(self, body: dict[str, Any], reply: Reply, messages: list[dict[str, Any]]) -> dict[str, Any]:
        prompt, completion = _prompt_tokens(messages), len(_words(reply.text))
        return {
            "id": "chatcmpl-double",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", ""),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": reply.text},
                    "finish_reason": reply.finish_reason or "stop",
                }
            ],
            "usage": {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
            },
        }


@contextlib.asynccontextmanager
async def openai_double(**kw: Any) -> AsyncIterator[OpenAIDouble]:
    async with OpenAIDouble(**kw) as api:
        yield api


def main(argv: list[str] | None = None) -> None:
    """Serve the double in its own process (the benchmark keeps its cost out of the adapter's):
    prints the port, then serves until killed."""
    import argparse

    parser = argparse.ArgumentParser(description="OpenAI chat completions double on 127.0.0.1")
    parser.add_argument(
        "--latency-ms", type=float, default=0.0, help="delay before every response's first byte"
    )
    parser.add_argument("--status", type=int, default=0, help="answer every request with this HTTP status")
    parser.add_argument("--first-byte-delay-ms", type=float, default=0.0, help="extra delay on every request")
    args = parser.parse_args(argv)
    fault = None
    if args.status or args.first_byte_delay_ms:
        fault = Fault(status=args.status, first_byte_delay_s=args.first_byte_delay_ms / 1000)

    async def serve() -> None:
        async with OpenAIDouble(latency_s=args.latency_ms / 1000, always=fault, max_recorded=0) as api:
            print(api.port, flush=True)
            await asyncio.Event().wait()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())


if __name__ == "__main__":
    main()
