"""llm_svc settings and host factory."""

from __future__ import annotations

from common import registry
from common.gen.voiceai.llm.v1 import llm_pb2_grpc
from common.server import ServiceHost, single_service_host
from common.settings import ServiceSettings
from llm_svc.providers import REGISTRY
from llm_svc.providers.base import ChatModel
from llm_svc.server import LanguageModelServicer

DEFAULT_PORT = 50062


class Settings(ServiceSettings):
    """llm_svc settings (env prefix VOICEAI_)."""

    llm_engine: str = "local"
    llm_default_reply: str = "I'm the offline demo agent. I heard you say: {user}"
    llm_token_delay_ms: int = 0


def make_engine(settings: Settings) -> ChatModel:
    cls = registry.load(settings.llm_engine, REGISTRY)
    if settings.llm_engine == "local":
        return cls(default_reply=settings.llm_default_reply, token_delay_ms=settings.llm_token_delay_ms)  # type: ignore[no-any-return]
    return cls()  # type: ignore[no-any-return]


def build_host(settings: Settings, engine: ChatModel | None = None) -> ServiceHost:
    servicer = LanguageModelServicer(engine or make_engine(settings))
    return single_service_host(
        settings,
        "voiceai.llm.v1.LanguageModelService",
        llm_pb2_grpc.add_LanguageModelServiceServicer_to_server,
        servicer,
    )


async def build_ready(settings: Settings) -> ServiceHost:
    return build_host(settings)
