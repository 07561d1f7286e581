"""Deepgram Nova-3 streaming recognition over the listen websocket (``deepgram-sdk`` 7).

One websocket per stream: PCM16 16 kHz goes out as binary media messages, Deepgram's JSON
messages come back and become the Recognizer events (``SpeechStarted``, ``Interim``, ``Final``,
``UtteranceEnd``) with ms offsets from the start of the stream, as the local engine's are.
``KeepAlive`` is sent while no audio flows (Deepgram closes a stream idle for ~10 s).

The base URL is configurable, so a self-hosted (GPU) Deepgram is used the same way; several
URLs are balanced least-in-flight and a failing one is avoided for a while. Keys come from
``common.providers.resolve_key`` (a tenant's own key, else the deployment's); a self-hosted
endpoint may need none. Each (URL, key) has one SDK client, cached and bounded.

Deadlines, each ending the stream with ``ProviderError(kind="timeout")``: the handshake
(``connect_timeout_s``), the first message after audio was sent (``first_result_timeout_s``),
and silence from Deepgram while audio is outstanding (``inactivity_timeout_s``). Nothing in
here logs a key: the SDK's ``ApiError`` prints the request headers, so it is never chained.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
from deepgram import AsyncDeepgramClient
from deepgram.core.api_error import ApiError
from deepgram.environment import DeepgramClientEnvironment
from deepgram.listen.v1.socket_client import AsyncV1SocketClient
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from common.context import tenant_id
from common.providers import ProviderError, ProviderKey, ProviderLimiter, resolve_key
from common.tasks import cancel_and_wait
from stt_svc.providers.base import (
    ENGINE_RATE,
    Final,
    Interim,
    RecognitionEvent,
    RecognitionOptions,
    SpeechStarted,
    UtteranceEnd,
    Word,
)
from stt_svc.providers.endpoints import EndpointBalancer

log = logging.getLogger(__name__)

CLOUD_URL = "wss://api.deepgram.com"
KEY_ENV = "DEEPGRAM_API_KEY"
MAX_CLIENTS = 64  # SDK clients cached per (URL, key): tenants with their own keys
MAX_EVENTS_QUEUED = 256  # a caller this far behind is not reading: the stream fails


@dataclass(frozen=True, slots=True)
class DeepgramConfig:
    """How this process talks to Deepgram (from stt_svc settings)."""

    urls: tuple[str, ...] = ()  # empty: Deepgram's cloud
    model: str = "nova-3"
    smart_format: bool = True
    utterance_end_ms: int = 1000  # Deepgram's minimum
    max_streams_per_key: int = 50  # pay-as-you-go streaming limit; divide by replicas
    queue_timeout_s: float = 0.05
    connect_timeout_s: float = 3.0
    first_result_timeout_s: float = 3.0
    inactivity_timeout_s: float = 10.0
    keepalive_s: float = 4.0
    failure_penalty_s: float = 5.0

    @property
    def self_hosted(self) -> bool:
        return bool(self.urls)


def websocket_base(url: str) -> str:
    """``https://host`` / ``http://host:8080`` / ``wss://host`` -> the websocket base, no slash."""
    url = url.strip().rstrip("/")
    for http, ws in (("https://", "wss://"), ("http://", "ws://")):
        if url.startswith(http):
            return ws + url[len(http) :]
    if not url.startswith(("ws://", "wss://")):
        raise ValueError(f"Deepgram URL {url!r} must start with ws://, wss://, http:// or https://")
    return url


def _ms(seconds: float | None) -> int:
    return round((seconds or 0.0) * 1000)


def _retry_after(error: ApiError) -> float | None:
    """Retry-After of the refused handshake (the SDK keeps it only on the exception it wraps)."""
    headers = getattr(error.__context__, "headers", None)
    value = headers.get("Retry-After") if headers is not None else None
    try:
        return float(value) if value else None
    except ValueError:
        return None


class DeepgramRecognizer:
    """Deepgram listen streams for every tenant of this process: clients, caps and endpoints."""

    name = "deepgram"

    def __init__(self, config: DeepgramConfig, environ: Mapping[str, str] | None = None) -> None:
        self.config = config
        self._environ = environ
        self.endpoints = EndpointBalancer(
            [websocket_base(u) for u in config.urls] or [CLOUD_URL], config.failure_penalty_s
        )
        self.limiter = ProviderLimiter("stt", "deepgram", config.max_streams_per_key, config.queue_timeout_s)
        self._clients: OrderedDict[tuple[str, str], AsyncDeepgramClient] = OrderedDict()
        self._http: httpx.AsyncClient | None = None

    @property
    def attempts(self) -> int:
        """How many times a chain may open this provider for one stream (once per URL)."""
        return len(self.endpoints.urls)

    def _client(self, url: str, key: ProviderKey | None) -> AsyncDeepgramClient:
        cache_key = (url, key.fingerprint if key else "")
        client = self._clients.get(cache_key)
        if client is None:
            # The SDK insists on an httpx client; websockets never use it, so one is shared.
            self._http = self._http or httpx.AsyncClient()
            env = DeepgramClientEnvironment(base=url, production=url, agent=url, agent_rest=url)
            client = AsyncDeepgramClient(
                api_key=key.value if key else "", environment=env, httpx_client=self._http
            )
            self._clients[cache_key] = client
            if len(self._clients) > MAX_CLIENTS:
                self._clients.popitem(last=False)
        else:
            self._clients.move_to_end(cache_key)
        return client

    def _params(self, options: RecognitionOptions) -> dict[str, Any]:
        model = options.model or self.config.model
        params: dict[str, Any] = {
            "model": model,
            "language": options.language or "en-US",
            "encoding": "linear16",
            "sample_rate": ENGINE_RATE,
            "channels": 1,
            # Interim results are needed for UtteranceEnd; they are dropped if not asked for.
            "interim_results": "true",
            "vad_events": "true",
            "endpointing": options.endpointing_ms,
            "utterance_end_ms": self.config.utterance_end_ms,
            "smart_format": "true" if self.config.smart_format else "false",
        }
        if options.keyterms and model.startswith("nova-3"):
            params["keyterm"] = list(options.keyterms)  # the SDK repeats the parameter per term
        return params

    async def open(self, options: RecognitionOptions) -> DeepgramStream:
        key = resolve_key(KEY_ENV, tenant_id(), self._environ)
        if key is None and not self.config.self_hosted:
            raise ProviderError(
                f"no Deepgram key for this tenant: set {KEY_ENV} (or {KEY_ENV}__<TENANT>)", kind="no_key"
            )
        stack = contextlib.AsyncExitStack()
        try:
            await stack.enter_async_context(self.limiter.slot(key))
            url = self.endpoints.acquire()
            stack.callback(self.endpoints.release, url)
            client = self._client(url, key)
            label = f"{url} (key {key.label}/{key.fingerprint})" if key else url
            # Errors are built here and raised below, outside the handlers: the SDK's ApiError
            # (request headers, the refused response) is then not kept as their context.
            failure: ProviderError | None = None
            try:
                async with asyncio.timeout(self.config.connect_timeout_s):
                    socket = await stack.enter_async_context(
                        client.listen.v1.connect(**self._params(options))
                    )
            except ApiError as e:
                failure = self._refused(url, label, e.status_code or 0, _retry_after(e))
            except TimeoutError:
                self.endpoints.mark_failed(url)
                failure = ProviderError(
                    f"Deepgram at {label} did not accept the stream within {self.config.connect_timeout_s:g} s",
                    kind="timeout",
                )
            except (OSError, InvalidHandshake) as e:
                self.endpoints.mark_failed(url)
                failure = ProviderError(
                    f"could not connect to Deepgram at {label}: {type(e).__name__}", kind="connect"
                )
            if failure is not None:
                raise failure
            return DeepgramStream(
                socket, stack, options, self.config, lambda: self.endpoints.mark_failed(url)
            )
        except BaseException:
            await stack.aclose()
            raise

    def _refused(self, url: str, label: str, status: int, retry_after_s: float | None) -> ProviderError:
        if status == 429:
            if self.config.self_hosted:
                self.endpoints.mark_failed(url, retry_after_s)
            after = f"; retry after {retry_after_s:g} s" if retry_after_s is not None else ""
            return ProviderError(
                f"Deepgram at {label} is rate limiting (HTTP 429){after}",
                kind="rate_limited",
                retry_after_s=retry_after_s,
            )
        if status in (401, 403):
            return ProviderError(
                f"Deepgram at {label} rejected the API key (HTTP {status}); check {KEY_ENV}", kind="auth"
            )
        if status >= 500:
            self.endpoints.mark_failed(url)
            return ProviderError(f"Deepgram at {label} failed (HTTP {status})", kind="server_error")
        return ProviderError(
            f"Deepgram at {label} refused the stream (HTTP {status}): check the model, language and keyterms",
            kind="bad_request",
        )

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()


class DeepgramStream:
    """One listen websocket: owns it, its reader and keep-alive tasks, and its event queue."""

    def __init__(
        self,
        socket: AsyncV1SocketClient,
        stack: contextlib.AsyncExitStack,
        options: RecognitionOptions,
        config: DeepgramConfig,
        on_endpoint_failure: Any,
    ) -> None:
        self._socket = socket
        self._stack = stack
        self._options = options
        self._config = config
        self._on_endpoint_failure = on_endpoint_failure
        self._loop = asyncio.get_running_loop()
        self._events: asyncio.Queue[RecognitionEvent | None] = asyncio.Queue()
        self._failure: BaseException | None = None
        self._closing = False  # CloseStream sent: the socket closing is the normal end
        self._closed = False
        self._heard = False  # any message received yet
        self._watchdog: asyncio.TimerHandle | None = None  # armed while a reply is outstanding
        self._last_sent = self._loop.time()
        self._in_utterance = False
        self._last_word_end_ms = 0
        self._ended = False
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
        if self._closed:
            return
        self._closed = True
        self._disarm()
        await cancel_and_wait(self._reader, self._keepalive)
        self._end_events()
        await self._stack.aclose()  # closes the websocket, frees the endpoint and the cap slot

    # ------------------------------------------------------------------ sending
    async def _send(self, sending: Any) -> None:
        self._last_sent = self._loop.time()
        if self._watchdog is None:
            limit = self._config.inactivity_timeout_s if self._heard else self._config.first_result_timeout_s
            self._watchdog = self._loop.call_later(limit, self._expire, limit)
        try:
            await sending
        except ConnectionClosed:
            pass  # the reader sees the same closure and reports it

    async def _keep_alive(self) -> None:
        interval = self._config.keepalive_s
        while True:
            await asyncio.sleep(max(0.05, self._last_sent + interval - self._loop.time()))
            if self._loop.time() - self._last_sent >= interval and not self._closing:
                self._last_sent = self._loop.time()
                with contextlib.suppress(ConnectionClosed):
                    await self._socket.send_keep_alive()

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
                kind = message.get("type")
                if kind == "Results":
                    self._on_results(message)
                elif kind == "SpeechStarted":
                    self._start_utterance(_ms(message.get("timestamp")))
                elif kind == "UtteranceEnd":
                    self._end_utterance(_ms(message.get("last_word_end")))
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
