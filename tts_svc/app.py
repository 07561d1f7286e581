"""tts_svc settings and host factory."""

from __future__ import annotations

import logging
import time

from pydantic import Field

from common import registry
from common.gen.voiceai.tts.v1 import tts_pb2, tts_pb2_grpc
from common.server import ServiceHost, single_service_host, warm_up
from common.settings import ServiceSettings
from tts_svc.providers import REGISTRY
from tts_svc.providers.base import Synthesizer
from tts_svc.server import MAX_PENDING_CHARS, MAX_TEXT_BYTES, TextToSpeechServicer

DEFAULT_PORT = 50063
log = logging.getLogger(__name__)


class Settings(ServiceSettings):
    """tts_svc settings (env prefix VOICEAI_, e.g. VOICEAI_TTS_ENGINE)."""

    # A registry key ("local" = Piper) or "module:Class" (the benchmark plugs in
    # tests.fakes.tts:ZeroCostSynthesizer this way).
    tts_engine: str = "local"
    # The voice for streams whose config leaves it empty; "" = the engine's own default.
    tts_default_voice: str = ""
    # Largest text message accepted (the proto documents 4096).
    tts_max_text_bytes: int = Field(default=MAX_TEXT_BYTES, ge=1)
    # Text a stream may have waiting for synthesis before it gets RESOURCE_EXHAUSTED.
    tts_max_pending_chars: int = Field(default=MAX_PENDING_CHARS, ge=1024)


def make_engine(settings: Settings) -> Synthesizer:
    """Build the configured engine; the local one gets ``threads`` (0 = one per core)."""
    cls = registry.load(settings.tts_engine, REGISTRY)
    if settings.tts_engine == "local":
        return cls(threads=settings.engine_threads)  # type: ignore[no-any-return]
    return cls()  # type: ignore[no-any-return]


def build_servicer(settings: Settings, engine: Synthesizer) -> TextToSpeechServicer:
    return TextToSpeechServicer(
        engine,
        default_voice=settings.tts_default_voice,
        max_pending_chars=settings.tts_max_pending_chars,
        max_text_bytes=settings.tts_max_text_bytes,
    )


def build_host(settings: Settings, engine: Synthesizer | None = None) -> ServiceHost:
    servicer = build_servicer(settings, engine or make_engine(settings))
    return single_service_host(
        settings,
        "voiceai.tts.v1.TextToSpeechService",
        tts_pb2_grpc.add_TextToSpeechServiceServicer_to_server,
        servicer,
    )


async def build_ready(settings: Settings) -> ServiceHost:
    """Load the voice and warm it up before the host can report SERVING.

    A default voice the engine does not have fails here, at start, not on every stream.
    """
    began = time.monotonic()
    engine = make_engine(settings)
    build_servicer(settings, engine).options(tts_pb2.SynthesisConfig())  # checks the default voice
    await warm_up(engine)
    log.info("engine %s loaded and warmed up in %.1f s", engine.name, time.monotonic() - began)
    return build_host(settings, engine)
