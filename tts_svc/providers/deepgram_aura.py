"""Deepgram Aura-2 over the websocket speak API (``/v1/speak``), with deepgram-sdk's async client.

One websocket per stream (``AuraSession``), taken at its first piece and kept for the rest:
each piece is a ``Speak`` message plus a ``Flush``; its binary audio (linear16 at the client's
rate where Deepgram has it) is passed on as it arrives, and ``Flushed`` ends the piece. The
socket holds one slot of the per-key cap (Deepgram counts open websockets) while it is open.
A piece abandoned mid-way (barge-in, cancelled stream) leaves audio in flight: before the
socket is used again it sends ``Clear`` and drops everything up to ``Cleared``; if that does
not come within the close deadline, the socket is closed (``Clear`` then ``Close``) instead.
A socket that ends its stream clean (or Cleared) waits for the next stream with the same key,
voice, rate and speed (``speak_sockets.IdleSockets``), so a turn's first audio skips the
handshakes; a used socket found closed by Deepgram before any audio is replaced once.

The voice is Deepgram's model name (``aura-2-thalia-en``); an agent may give the full name or
the speaker alone (``thalia``, completed with ``config.model``, default ``aura-2``, and the
language, default ``en``). ``base_url`` points the same client at a self-hosted Deepgram.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING, Any

import httpx
import websockets.exceptions

from common import deepgram_tls
from common.errors import InvalidArgument
from common.provider_clients import ClientCache
from common.providers import (
    CloseOnce,
    EnvKeySource,
    KeyHint,
    KeySource,
    ProviderError,
    ProviderKey,
    ProviderLimiter,
    ProviderSpec,
)
from tts_svc.providers.base import SynthesisOptions
from tts_svc.providers.cloud import Deadlines, status_error
from tts_svc.providers.speak_sockets import IdleSockets, Params, SpeakSocket

if TYPE_CHECKING:
    from tts_svc.app import Settings

log = logging.getLogger(__name__)

ENV_KEY = "DEEPGRAM_API_KEY"
RATES = (8000, 16000, 24000, 32000, 48000)  # linear16 rates the speak API offers
DEFAULT_RATE = 24000
_FULL = re.compile(r"^aura(-2)?-[a-z]+-[a-z]{2}$")
_SPEAKER = re.compile(r"^[a-z]+$")


def _urls(base_url: str) -> tuple[str, str]:
    """(https base, wss base) from any of http(s)://host or ws(s)://host."""
    url = base_url.rstrip("/")
    ws = url.replace("https://", "wss://", 1).replace("http://", "ws://", 1)
    http = ws.replace("wss://", "https://", 1).replace("ws://", "http://", 1)
    return http, ws


class DeepgramAura:
    """The Deepgram TTS provider of one process: key resolution, clients, cap, voice rules."""

    name = "deepgram"
    sample_rate = DEFAULT_RATE
    voices: tuple[str, ...] = ()  # any Aura voice: checked by ``validate``

    def __init__(
        self,
        *,
        base_url: str = "",
        default_voice: str = "aura-2-thalia-en",
        capacity: int = 40,
        queue_timeout_s: float = 0.05,
        deadlines: Deadlines | None = None,
        idle_s: float = 10.0,
        max_idle: int = 8,
        keys: KeySource,
    ) -> None:
        self.base_url = base_url
        self.default_voice = default_voice
        deepgram_tls.install()  # at start, not on the loop when a wss socket opens
        self.deadlines = deadlines or Deadlines()
        self.limiter = ProviderLimiter("tts", self.name, capacity, queue_timeout_s)
        self.idle = IdleSockets(idle_s=idle_s, max_idle=max_idle, close_s=self.deadlines.close_s)
        self._keys = keys
        # Clients only differ by key; the speak API is websockets only, so one idle HTTP pool
        # serves them all.
        self._http = httpx.AsyncClient()
        self._clients: ClientCache[Any] = ClientCache(self._build_client, _no_close)

    async def key(self, tenant_id: str) -> ProviderKey | None:
        """The key for ``tenant_id``'s requests (its own, else the deployment's), or None."""
        return await self._keys.key_for(ENV_KEY, tenant_id)

    def serves(self, tenant_id: str) -> bool:
        """A key for the tenant (its own or the deployment's), or a self-hosted URL."""
        keys = self._keys
        return bool(self.base_url) or not isinstance(keys, KeyHint) or keys.may_have_key(ENV_KEY, tenant_id)

    def _build_client(self, key: ProviderKey | None) -> Any:
        from deepgram import AsyncDeepgramClient
        from deepgram.environment import DeepgramClientEnvironment

        kwargs: dict[str, Any] = {"api_key": key.value if key else "", "httpx_client": self._http}
        if self.base_url:
            http, ws = _urls(self.base_url)
            kwargs["environment"] = DeepgramClientEnvironment(
                base=http, production=ws, agent=ws, agent_rest=http
            )
        return AsyncDeepgramClient(**kwargs)

    async def client(self, key: ProviderKey | None) -> Any:
        return await self._clients.get(key)

    def model(self, options: SynthesisOptions) -> str:
        """Deepgram's model parameter (the voice) for a stream; InvalidArgument names the field."""
        family = options.model or "aura-2"
        if family not in ("aura", "aura-2"):
            raise InvalidArgument(
                f"config.model {options.model[:40]!r} is not a Deepgram Aura model; use aura-2 or leave it empty"
            )
        voice = options.voice or self.default_voice
        if _FULL.match(voice):
            return voice
        if _SPEAKER.match(voice):
            language = (options.language or "en").replace("_", "-").split("-")[0].lower()
            return f"{family}-{voice}-{language}"
        raise InvalidArgument(
            f"voice {voice[:60]!r} is not a Deepgram Aura voice; use a model name such as"
            " aura-2-thalia-en, or a speaker such as thalia"
        )

    def validate(self, options: SynthesisOptions) -> None:
        self.model(options)

    def open_session(self, options: SynthesisOptions) -> AuraSession:
        return AuraSession(self, options)

    async def synthesize(self, text: str, options: SynthesisOptions) -> bytes:
        session = self.open_session(options)
        try:
            return b"".join([pcm async for pcm in session.synthesize_stream(text)])
        finally:
            await session.aclose()

    async def aclose(self) -> None:
        await self.idle.aclose()
        await self._clients.aclose()
        await self._http.aclose()


async def _no_close(_client: Any) -> None:
    return None  # AsyncDeepgramClient holds nothing of its own (the HTTP pool is shared)


class AuraSession:
    """One stream's websocket to Deepgram (see module docstring)."""

    def __init__(self, provider: DeepgramAura, options: SynthesisOptions) -> None:
        self._p = provider
        self._model = provider.model(options)
        self._tenant = options.tenant_id
        self._speed = options.speaking_rate if options.speaking_rate != 1.0 else None
        self.sample_rate = options.sample_rate if options.sample_rate in RATES else DEFAULT_RATE
        self._socket: SpeakSocket | None = None
        self._dirty = False  # a piece's audio may still be in flight: Clear before speaking again
        self._closed = False
        self._closer = CloseOnce(self._close, "tts-deepgram-session-close")

    async def synthesize_stream(self, text: str) -> AsyncGenerator[bytes, None]:
        for attempt in range(2):
            socket = await self._ready()
            got_audio = False
            try:
                async for pcm in self._speak(socket, text):
                    got_audio = True
                    yield pcm
                socket.pieces += 1
                return
            except ProviderError as e:
                await self._drop()
                if attempt == 0 and socket.pieces and not got_audio and e.kind == "disconnect":
                    continue  # a used socket the server had closed meanwhile: reconnect once
                raise

    async def _ready(self) -> SpeakSocket:
        if self._closed:
            raise ProviderError("deepgram session already closed", kind="closed")
        if self._socket is not None and self._dirty and not await self._clear():
            await self._drop()
        if self._socket is None:
            self._socket = await self._open()
        return self._socket

    async def _open(self) -> SpeakSocket:
        """An idle socket opened for the same key, voice, rate and speed, else a new one."""
        key = await self._p.key(self._tenant)
        params: Params = (key.fingerprint if key else "", self._model, self.sample_rate, self._speed)
        idle = await self._p.idle.take(params)
        if idle is not None:
            return idle
        if self._p.limiter.in_use(key) >= self._p.limiter.capacity:
            await self._p.idle.evict(params[0])  # an idle socket's slot serves a live stream first
        return await self._connect(key, params)

    async def _connect(self, key: ProviderKey | None, params: Params) -> SpeakSocket:
        from deepgram.core.api_error import ApiError

        stack = contextlib.AsyncExitStack()
        try:
            await stack.enter_async_context(self._p.limiter.slot(key))
            client = await self._p.client(key)
            connect = client.speak.v1.connect(
                model=self._model, encoding="linear16", sample_rate=str(self.sample_rate), speed=self._speed
            )
            try:
                async with asyncio.timeout(self._p.deadlines.connect_s):
                    ws = await stack.enter_async_context(connect)
            except ApiError as e:
                # ApiError's text includes the request headers (the key): never chain or log it.
                response = getattr(e.__context__, "headers", None)
                raise status_error("deepgram", e.status_code or 0, response, key) from None
            except TimeoutError:
                raise ProviderError(
                    f"deepgram did not accept the websocket within {self._p.deadlines.connect_s:g} s",
                    kind="timeout",
                ) from None
            except (OSError, websockets.exceptions.WebSocketException) as e:
                raise ProviderError(
                    f"deepgram connection failed ({type(e).__name__})", kind="connect"
                ) from None
        except BaseException:
            await stack.aclose()
            raise
        return SpeakSocket(ws, stack, params)

    async def _speak(self, socket: SpeakSocket, text: str) -> AsyncGenerator[bytes, None]:
        from deepgram.speak.v1.types import SpeakV1Text

        ws, deadlines = socket.ws, self._p.deadlines
        self._dirty = True  # until Flushed, this piece's audio may be in flight
        got_audio = False
        wait = deadlines.first_audio_s
        # The sends count toward the first audio: a peer that stops reading blocks them.
        first_by = asyncio.get_running_loop().time() + wait
        try:
            async with asyncio.timeout_at(first_by):
                await ws.send_text(SpeakV1Text(type="Speak", text=text))
                await ws.send_flush()
            while True:
                wait = deadlines.idle_s if got_audio else deadlines.first_audio_s
                async with asyncio.timeout(wait) if got_audio else asyncio.timeout_at(first_by):
                    message = await ws.recv()
                if isinstance(message, bytes):
                    got_audio = True
                    if message:
                        yield message
                    continue
                kind = _type(message)
                if kind == "Flushed":
                    self._dirty = False
                    return
                if kind == "Warning":
                    log.warning("deepgram warning: %s", _field(message, "description")[:200])
        except TimeoutError:
            what = "more audio" if got_audio else "audio"
            raise ProviderError(f"deepgram sent no {what} within {wait:g} s", kind="timeout") from None
        except websockets.exceptions.ConnectionClosed as e:
            close = e.rcvd or e.sent
            how = f"code {close.code}, {close.reason[:80]!r}" if close else "no close frame"
            raise ProviderError(
                f"deepgram closed the websocket mid-stream ({how})", kind="disconnect"
            ) from None
        except (ValueError, TypeError) as e:  # a frame the SDK cannot parse (a proxy's page ...)
            # A ProviderError, so the session drops the socket rather than pool it for reuse.
            raise ProviderError(
                f"deepgram sent a message this client cannot read ({type(e).__name__})", kind="protocol"
            ) from None

    async def _clear(self) -> bool:
        """Drop the abandoned piece's audio; True once Deepgram confirms with Cleared."""
        assert self._socket is not None
        ws = self._socket.ws
        try:
            async with asyncio.timeout(self._p.deadlines.close_s):
                await ws.send_clear()
                while _type(await ws.recv()) != "Cleared":
                    pass  # audio and Flushed of the abandoned piece
        except (TimeoutError, websockets.exceptions.WebSocketException, OSError):
            return False
        self._dirty = False
        return True

    async def _drop(self) -> None:
        """Close the socket (politely, bounded) and give back its cap slot."""
        socket, self._socket = self._socket, None
        dirty, self._dirty = self._dirty, False
        if socket is not None:
            await socket.close(self._p.deadlines.close_s, clear=dirty)

    async def aclose(self) -> None:
        """A clean socket (or one that confirms Cleared) is kept for the next stream. Idempotent,
        and finished even if the caller is cancelled (else the socket and its slot would leak)."""
        self._closed = True
        await self._closer()

    async def _close(self) -> None:
        socket = self._socket
        if socket is None:
            return
        if (not self._dirty or await self._clear()) and self._p.idle.max_idle:
            self._socket = None
            await self._p.idle.put(socket)
        else:
            await self._drop()


def _type(message: Any) -> str:
    return str(_field(message, "type"))


def _field(message: Any, name: str) -> str:
    if isinstance(message, dict):
        return str(message.get(name, ""))
    return str(getattr(message, name, ""))


# ---------------------------------------------------------------------------- registration


def configured(settings: Settings, env: EnvKeySource) -> bool:
    """A self-hosted URL, the deployment's key or any tenant's own key enables Aura-2."""
    return bool(settings.tts_deepgram_url) or env.has_any(ENV_KEY)


def build(settings: Settings, keys: KeySource, /, **_: Any) -> DeepgramAura:
    """The provider from tts_svc's settings."""
    return DeepgramAura(
        base_url=settings.tts_deepgram_url,
        default_voice=settings.tts_deepgram_voice,
        capacity=settings.tts_deepgram_max_streams,
        idle_s=settings.tts_deepgram_idle_s,
        max_idle=settings.tts_deepgram_max_idle,
        queue_timeout_s=settings.tts_provider_queue_timeout_s,
        deadlines=settings.deadlines(),
        keys=keys,
    )


PROVIDER: ProviderSpec[Settings, DeepgramAura] = ProviderSpec("deepgram", configured, build)
