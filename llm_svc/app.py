"""llm_svc settings and host factory."""

from __future__ import annotations

from pydantic import Field

from common import registry
from common.gen.voiceai.llm.v1 import llm_pb2_grpc
from common.server import ServiceHost, single_service_host
from common.settings import ServiceSettings
from llm_svc.providers import REGISTRY
from llm_svc.providers.base import ChatModel
from llm_svc.providers.offline_responder import DEFAULT_GREETING, DEFAULT_REPLY, OfflineResponder
from llm_svc.server import MAX_TOKENS_LIMIT, LanguageModelServicer

DEFAULT_PORT = 50062


class Settings(ServiceSettings):
    """llm_svc settings (env prefix VOICEAI_, e.g. VOICEAI_LLM_ENGINE)."""

    # A registry key ("local" = the offline responder) or "module:Class" (the benchmark plugs in
    # tests.fakes.llm:ZeroCostChatModel this way).
    llm_engine: str = "local"
    # Completion-token bound for requests that send max_tokens = 0.
    llm_max_tokens: int = Field(default=1024, ge=1, le=MAX_TOKENS_LIMIT)
    # Offline responder: the reply when neither an intent nor the agent's default matches
    # ("{user}" = the caller's words), and the reply before the caller has said anything.
    llm_default_reply: str = DEFAULT_REPLY
    llm_greeting: str = DEFAULT_GREETING
    # Offline responder: pause before each word-sized delta, to imitate a model's pace.
    llm_token_delay_ms: int = Field(default=0, ge=0, le=10_000)


def make_engine(settings: Settings) -> ChatModel:
    """Build the configured engine; the offline responder gets its settings, others none."""
    cls = registry.load(settings.llm_engine, REGISTRY)
    if isinstance(cls, type) and issubclass(cls, OfflineResponder):
        return cls(
            default_reply=settings.llm_default_reply,
            greeting=settings.llm_greeting,
            token_delay_ms=settings.llm_token_delay_ms,
        )
    return cls()  # type: ignore[no-any-return]


def build_host(settings: Settings, engine: ChatModel | None = None) -> ServiceHost:
    servicer = LanguageModelServicer(engine or make_engine(settings), settings.llm_max_tokens)
    return single_service_host(
        settings,
        "voiceai.llm.v1.LanguageModelService",
        llm_pb2_grpc.add_LanguageModelServiceServicer_to_server,
        servicer,
    )


async def build_ready(settings: Settings) -> ServiceHost:
    """Nothing to load for the offline responder; the engine is built before SERVING."""
    return build_host(settings)
