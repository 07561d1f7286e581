"""stt_svc settings and host factory."""

from __future__ import annotations

from common import registry
from common.gen.voiceai.stt.v1 import stt_pb2_grpc
from common.server import ServiceHost, single_service_host, warm_up
from common.settings import ServiceSettings
from stt_svc.providers import REGISTRY
from stt_svc.providers.base import Recognizer
from stt_svc.server import SpeechToTextServicer

DEFAULT_PORT = 50061


class Settings(ServiceSettings):
    """stt_svc settings (env prefix VOICEAI_)."""

    stt_engine: str = "local"
    stt_endpointing_ms: int = 400
    stt_interim_interval_ms: int = 700
    stt_model_path: str = ""


def make_engine(settings: Settings) -> Recognizer:
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
