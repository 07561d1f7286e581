"""ElevenLabs streaming TTS (``POST /v1/text-to-speech/{voice_id}/stream``) with the elevenlabs SDK.

One HTTP streaming request per piece (raw PCM, ``output_format=pcm_<rate>`` at the client's
rate where ElevenLabs has it); audio is passed on as the body arrives. The SDK client (one per
key, over an httpx pool this module owns) keeps connections alive between pieces, so a stream
pays the TLS handshake once. Each request holds one slot of the per-key cap while it runs
(ElevenLabs limits concurrent requests per plan); a cancelled piece closes its response, which
ends the request at the provider. The SDK's own retries are off: the chain decides what
happens after a failure, and a retry would hide a 429 from the cap and fallback logic.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncGenerator, AsyncIterator
from typing import TYPE_CHECKING, Any

import httpx

from common.errors import InvalidArgument
from common.provider_clients import ClientCache
from common.providers import (
    EnvKeySource,
    KeyHint,
    KeySource,
    ProviderError,
    ProviderKey,
    ProviderLimiter,
    ProviderSpec,
)
from tts_svc.providers.base import SynthesisOptions
from tts_svc.providers.cloud import Deadlines, EvenBytes, status_error

if TYPE_CHECKING:
    from tts_svc.app import Settings

ENV_KEY = "ELEVENLABS_API_KEY"
RATES = (8000, 16000, 22050, 24000, 32000, 44100, 48000)  # pcm_<rate> output formats
DEFAULT_RATE = 24000
_VOICE_ID = re.compile(r"^[A-Za-z0-9]{8,40}$")
_MODEL_ID = re.compile(r"^[a-z0-9_]{1,64}$")
MIN_SPEED, MAX_SPEED = 0.7, 1.2  # the range ElevenLabs accepts in voice_settings.speed


class ElevenLabsTts:
    """The ElevenLabs TTS provider of one process: key resolution, clients, cap, voice rules."""

    name = "elevenlabs"
    sample_rate = DEFAULT_RATE
    voices: tuple[str, ...] = ()  # any voice id of the account: checked for form by ``validate``

    def __init__(
        self,
        *,
        base_url: str = "",
        default_voice: str = "JBFqnCBsd6RMkjVDRZzb",
        default_model: str = "eleven_flash_v2_5",
        capacity: int = 10,
        queue_timeout_s: float = 0.05,
        deadlines: Deadlines | None = None,
        keys: KeySource,
        max_clients: int = 32,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.default_voice = default_voice
        self.default_model = default_model
        self.deadlines = deadlines or Deadlines()
        self.limiter = ProviderLimiter("tts", self.name, capacity, queue_timeout_s)
        self._keys = keys
        self._clients: ClientCache[Any] = ClientCache(self._build_client, _close_client, max_clients)
        # Loaded once here: a client per new key would otherwise load the CA bundle on the
        # event loop (~20-70 ms of CPU during which no stream of the process moves).
        self._tls = httpx.create_ssl_context()

    async def key(self, tenant_id: str) -> ProviderKey | None:
        """The key for ``tenant_id``'s requests (its own, else the deployment's), or None."""
        return await self._keys.key_for(ENV_KEY, tenant_id)

    def serves(self, tenant_id: str) -> bool:
        """A key for the tenant may exist (a key source that cannot tell is asked per stream)."""
        return not isinstance(self._keys, KeyHint) or self._keys.may_have_key(ENV_KEY, tenant_id)

    def _build_client(self, key: ProviderKey | None) -> Any:
        from elevenlabs.client import AsyncElevenLabs

        d = self.deadlines
        # Our own pool, closed when the client is evicted; the SDK's default would leak with it.
        http = httpx.AsyncClient(
            timeout=httpx.Timeout(max(d.first_audio_s, d.idle_s), connect=d.connect_s), verify=self._tls
        )
        client = AsyncElevenLabs(
            api_key=key.value if key else "", base_url=self.base_url or None, httpx_client=http
        )
        return client, http  # the pool is what _close_client releases

    async def client(self, key: ProviderKey | None) -> Any:
        return (await self._clients.get(key))[0]

    @contextlib.asynccontextmanager
    async def lease(self, key: ProviderKey | None) -> AsyncIterator[Any]:
        """The key's client for one request: not closed under it if evicted meanwhile."""
        async with self._clients.lease(key) as (client, _http):
            yield client

    def voice_and_model(self, options: SynthesisOptions) -> tuple[str, str]:
        voice = options.voice or self.default_voice
        if not _VOICE_ID.match(voice):
            raise InvalidArgument(
                f"voice {voice[:60]!r} is not an ElevenLabs voice id (letters and digits, e.g."
                f" {self.default_voice}); leave it empty for the default"
            )
        model = options.model or self.default_model
        if not _MODEL_ID.match(model):
            raise InvalidArgument(
                f"config.model {model[:60]!r} is not an ElevenLabs model id, e.g. eleven_flash_v2_5"
            )
        return voice, model

    def validate(self, options: SynthesisOptions) -> None:
        self.voice_and_model(options)

    def open_session(self, options: SynthesisOptions) -> ElevenLabsSession:
        return ElevenLabsSession(self, options)

    async def synthesize(self, text: str, options: SynthesisOptions) -> bytes:
        session = self.open_session(options)
        return b"".join([pcm async for pcm in session.synthesize_stream(text)])

    async def aclose(self) -> None:
        await self._clients.aclose()


async def _close_client(entry: tuple[Any, httpx.AsyncClient]) -> None:
    await entry[1].aclose()


class ElevenLabsSession:
    """One stream's requests to ElevenLabs: nothing survives a piece but the client's pool."""

    def __init__(self, provider: ElevenLabsTts, options: SynthesisOptions) -> None:
        self._p = provider
        self._voice, self._model = provider.voice_and_model(options)
        self._tenant = options.tenant_id
        rate = options.speaking_rate
        self._speed = None if rate == 1.0 else min(MAX_SPEED, max(MIN_SPEED, rate))
        self.sample_rate = options.sample_rate if options.sample_rate in RATES else DEFAULT_RATE

    async def synthesize_stream(self, text: str) -> AsyncGenerator[bytes, None]:
        from elevenlabs import VoiceSettings
        from elevenlabs.core.api_error import ApiError

        key = await self._p.key(self._tenant)
        if key is None:
            raise ProviderError("no ElevenLabs key for this tenant (ELEVENLABS_API_KEY)", kind="no_key")
        deadlines = self._p.deadlines
        # The voice sets the language (language_code is refused by most models); speed only
        # when asked, so the voice's own settings apply otherwise.
        extra: dict[str, Any] = {}
        if self._speed is not None:
            extra["voice_settings"] = VoiceSettings(speed=self._speed)
        async with (
            self._p.limiter.slot(key),
            self._p.lease(key) as client,
            contextlib.AsyncExitStack() as stack,
        ):
            wait = deadlines.first_audio_s
            got_audio = False
            try:
                # The status line comes with the first audio. A new connection's setup counts
                # here too (httpx bounds it by connect_s); a stream's later pieces reuse one.
                async with asyncio.timeout(wait):
                    response = await stack.enter_async_context(
                        client.text_to_speech.with_raw_response.stream(
                            self._voice,
                            text=text,
                            model_id=self._model,
                            output_format=f"pcm_{self.sample_rate}",
                            request_options={"max_retries": 0},
                            **extra,
                        )
                    )
                chunks, even = aiter(response.data), EvenBytes()
                while True:
                    wait = deadlines.idle_s if got_audio else deadlines.first_audio_s
                    async with asyncio.timeout(wait):
                        data = await anext(chunks, None)
                    if data is None:
                        return
                    pcm = even.feed(data)
                    if pcm:
                        got_audio = True
                        yield pcm
            except ApiError as e:
                raise status_error("elevenlabs", e.status_code or 0, e.headers, key) from None
            except TimeoutError:
                what = "more audio" if got_audio else "audio"
                raise ProviderError(f"elevenlabs sent no {what} within {wait:g} s", kind="timeout") from None
            except httpx.TransportError as e:
                kind = "disconnect" if got_audio or isinstance(e, httpx.RemoteProtocolError) else "connect"
                raise ProviderError(f"elevenlabs connection failed ({type(e).__name__})", kind=kind) from None

    async def aclose(self) -> None:
        return None


# ---------------------------------------------------------------------------- registration


def configured(settings: Settings, env: EnvKeySource) -> bool:
    """The deployment's key or any tenant's own key enables ElevenLabs."""
    return env.has_any(ENV_KEY)


def build(settings: Settings, keys: KeySource, /, **_: Any) -> ElevenLabsTts:
    """The provider from tts_svc's settings."""
    return ElevenLabsTts(
        base_url=settings.tts_elevenlabs_url,
        default_voice=settings.tts_elevenlabs_voice,
        default_model=settings.tts_elevenlabs_model,
        capacity=settings.tts_elevenlabs_max_streams,
        queue_timeout_s=settings.tts_provider_queue_timeout_s,
        deadlines=settings.deadlines(),
        keys=keys,
    )


PROVIDER: ProviderSpec[Settings, ElevenLabsTts] = ProviderSpec("elevenlabs", configured, build)
