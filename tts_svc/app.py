"""tts_svc settings and host factory."""

from __future__ import annotations

from common import registry
from common.gen.voiceai.tts.v1 import tts_pb2_grpc
from common.server import ServiceHost, single_service_host, warm_up
from common.settings import ServiceSettings
from tts_svc.providers import REGISTRY
from tts_svc.providers.base import Synthesizer
from tts_svc.server import TextToSpeechServicer

DEFAULT_PORT = 50063


class Settings(ServiceSettings):
    """tts_svc settings (env prefix VOICEAI_)."""

    tts_engine: str = "local"
    tts_default_voice: str = ""
    tts_max_pending_chars: int = 65536


def make_engine(settings: Settings) -> Synthesizer:
    cls = registry.load(settings.tts_engine, REGISTRY)
    if settings.tts_engine == "local":
        return cls(threads=settings.engine_threads)  # type: ignore[no-any-return]
    return cls()  # type: ignore[no-any-return]


def build_host(settings: Settings, engine: Synthesizer | None = None) -> ServiceHost:
    servicer = TextToSpeechServicer(
        engine or make_engine(settings), settings.tts_default_voice, settings.tts_max_pending_chars
    )
    return single_service_host(
        settings,
        "voiceai.tts.v1.TextToSpeechService",
        tts_pb2_grpc.add_TextToSpeechServiceServicer_to_server,
        servicer,
    )


async def build_ready(settings: Settings) -> ServiceHost:
    """Load the engine and warm it up before the host can report SERVING."""
    engine = make_engine(settings)
    await warm_up(engine)
    return build_host(settings, engine)
