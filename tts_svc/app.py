"""tts_svc settings and host factory."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping

from pydantic import Field

from common import registry
from common.gen.voiceai.tts.v1 import tts_pb2, tts_pb2_grpc
from common.load import attach_capacity
from common.providers import EnvKeySource, KeySource, load_specs
from common.server import ServiceHost, single_service_host, warm_up
from common.settings import ServiceSettings, environment
from common.tenant_keys import tenant_key_store
from tts_svc.chain import ChainSynthesizer
from tts_svc.providers import CLOUD, REGISTRY
from tts_svc.providers.base import Synthesizer
from tts_svc.providers.cloud import Deadlines
from tts_svc.server import MAX_PENDING_CHARS, MAX_TEXT_BYTES, TextToSpeechServicer

DEFAULT_PORT = 50063
log = logging.getLogger(__name__)


class Settings(ServiceSettings):
    """tts_svc settings (env prefix VOICEAI_, e.g. VOICEAI_TTS_ENGINE)."""

    # A registry key ("local" = Piper) or "module:Class" (the benchmark plugs in
    # tests.fakes.tts:ZeroCostSynthesizer this way).
    tts_engine: str = "local"
    # The local engine's voice for streams whose config leaves it empty (and when the local
    # engine takes over by fallback); "" = the engine's own default.
    tts_default_voice: str = ""
    # Largest text message accepted (the proto documents 4096).
    tts_max_text_bytes: int = Field(default=MAX_TEXT_BYTES, ge=1)
    # Text a stream may have waiting for synthesis before it gets RESOURCE_EXHAUSTED.
    tts_max_pending_chars: int = Field(default=MAX_PENDING_CHARS, ge=1024)

    # Provider chain for streams whose config names none, comma-separated (local, deepgram,
    # elevenlabs). Cloud providers are on when their key is in the environment
    # (DEEPGRAM_API_KEY / ELEVENLABS_API_KEY, or a tenant's <NAME>__<TENANT>); Deepgram also
    # when a self-hosted URL is set.
    tts_providers: str = "local"
    tts_deepgram_url: str = ""  # "" = Deepgram's cloud; e.g. ws://deepgram.internal:8080
    tts_deepgram_voice: str = "aura-2-thalia-en"
    # Open speak websockets per key on this instance (Deepgram pay-as-you-go allows 40-80 per
    # key in all: divide by the replicas sharing it).
    tts_deepgram_max_streams: int = Field(default=40, ge=1)
    # Clean sockets kept open between streams (they count against the cap while idle; one is
    # closed whenever a stream of the same key needs its slot). 0 = close at each stream's end.
    tts_deepgram_max_idle: int = Field(default=8, ge=0)
    tts_deepgram_idle_s: float = Field(default=10.0, gt=0)
    tts_elevenlabs_url: str = ""  # "" = https://api.elevenlabs.io
    tts_elevenlabs_voice: str = "JBFqnCBsd6RMkjVDRZzb"
    tts_elevenlabs_model: str = "eleven_flash_v2_5"
    tts_elevenlabs_max_streams: int = Field(default=10, ge=1)  # concurrent requests per key (plan)
    # How long a stream waits for a free slot before falling through to the next provider.
    tts_provider_queue_timeout_s: float = Field(default=0.05, ge=0)
    tts_provider_connect_timeout_s: float = Field(default=3.0, gt=0)
    tts_provider_first_audio_timeout_s: float = Field(default=3.0, gt=0)
    tts_provider_idle_timeout_s: float = Field(default=3.0, gt=0)  # between chunks of a piece

    def chain(self) -> list[str]:
        return [n.strip() for n in self.tts_providers.split(",") if n.strip()]

    def deadlines(self) -> Deadlines:
        return Deadlines(
            connect_s=self.tts_provider_connect_timeout_s,
            first_audio_s=self.tts_provider_first_audio_timeout_s,
            idle_s=self.tts_provider_idle_timeout_s,
        )


def make_engine(settings: Settings) -> Synthesizer:
    """Build the configured engine; the local one gets ``threads`` (0 = one per core)."""
    cls = registry.load(settings.tts_engine, REGISTRY)
    if settings.tts_engine == "local":
        return cls(threads=settings.engine_threads)
    return cls()


def make_chain(
    settings: Settings,
    local: Synthesizer,
    environ: Mapping[str, str] | None = None,
    keys: KeySource | None = None,
) -> ChainSynthesizer:
    """The local engine plus every cloud provider this instance has configuration for; cloud
    providers get their keys from ``keys`` (default: ``environ``'s, ``EnvKeySource``)."""
    env = EnvKeySource(environment() if environ is None else environ)
    providers: dict[str, Synthesizer] = {"local": local}
    for spec in load_specs(CLOUD):
        if spec.configured(settings, env):
            providers[spec.name] = spec.build(settings, keys or env)
    # VOICEAI_TTS_DEFAULT_VOICE names a voice of the local engine: the chain applies it to that
    # link only (a cloud provider has its own default).
    return ChainSynthesizer(providers, settings.chain(), {"local": settings.tts_default_voice})


def build_servicer(settings: Settings, engine: Synthesizer) -> TextToSpeechServicer:
    """``engine`` is the chain (``make_chain``) or a bare local engine, wrapped in one here."""
    if not isinstance(engine, ChainSynthesizer):
        engine = make_chain(settings, engine)
    return TextToSpeechServicer(
        engine,
        default_voice="",  # per provider, in the chain
        max_pending_chars=settings.tts_max_pending_chars,
        max_text_bytes=settings.tts_max_text_bytes,
    )


def build_host(settings: Settings, engine: Synthesizer | None = None) -> ServiceHost:
    """The tts_svc host over ``engine`` (default: the configured one)."""
    engine = engine or make_engine(settings)
    keys = None
    if not isinstance(engine, ChainSynthesizer):
        keys = tenant_key_store(EnvKeySource(environment()))  # BYOK first (None: no tenant_svc)
        engine = make_chain(settings, engine, keys=keys)
    host = single_service_host(
        settings,
        "voiceai.tts.v1.TextToSpeechService",
        tts_pb2_grpc.add_TextToSpeechServiceServicer_to_server,
        build_servicer(settings, engine),
    )
    host.on_stop.append(engine.aclose)
    if keys is not None:
        host.on_stop.append(keys.aclose)
    attach_capacity(host)  # issue 15: NOT_SERVING for new work at VOICEAI_MAX_STREAMS
    return host


async def build_ready(settings: Settings) -> ServiceHost:
    """Load the voice and warm it up before the host can report SERVING.

    A default voice the engine does not have, or a default chain naming an unknown provider or
    none configured here, fails at start, not on every stream.
    """
    began = time.monotonic()
    local = make_engine(settings)
    engine = make_chain(settings, local)
    # Checks the default chain and voice here, at start, not on every stream.
    build_servicer(settings, engine).options(tts_pb2.SynthesisConfig())
    await warm_up(local)
    log.info(
        "engine %s loaded and warmed up in %.1f s; providers: %s (default chain: %s)",
        local.name,
        time.monotonic() - began,
        ", ".join(engine.providers),
        ", ".join(settings.chain()),
    )
    return build_host(settings, engine)
