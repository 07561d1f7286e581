"""llm_svc settings and host factory."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import AliasChoices, Field

from common import registry
from common.errors import FailedPrecondition
from common.gen.voiceai.llm.v1 import llm_pb2_grpc
from common.load import attach_capacity
from common.providers import KNOWN_PROVIDERS, EnvKeySource, KeySource, load_specs
from common.redis_conn import RedisSettings, open_redis
from common.server import ServiceHost, single_service_host
from common.settings import ServiceSettings, environment
from common.tenant_keys import tenant_key_store
from llm_svc.chain import ProviderChain
from llm_svc.context_budget import ContextBudgets
from llm_svc.providers import CLOUD, REGISTRY
from llm_svc.providers.base import ChatModel
from llm_svc.providers.offline_responder import DEFAULT_GREETING, DEFAULT_REPLY, OfflineResponder
from llm_svc.providers.openai_chat import OpenAIOptions
from llm_svc.reply_cache import CachingChatModel, ReplyCache
from llm_svc.server import MAX_TOKENS_LIMIT, LanguageModelServicer

log = logging.getLogger(__name__)

DEFAULT_PORT = 50062


class Settings(ServiceSettings):
    """llm_svc settings (env prefix VOICEAI_, e.g. VOICEAI_LLM_ENGINE)."""

    # A registry key ("local" = the offline responder) or "module:Class" (the benchmark plugs in
    # tests.fakes.llm:ZeroCostChatModel this way). It serves the "local" provider of a chain.
    llm_engine: str = "local"
    # Completion-token bound for requests that send max_tokens = 0.
    llm_max_tokens: int = Field(default=1024, ge=1, le=MAX_TOKENS_LIMIT)
    # Offline responder: the reply when neither an intent nor the agent's default matches
    # ("{user}" = the caller's words), and the reply before the caller has said anything.
    llm_default_reply: str = DEFAULT_REPLY
    llm_greeting: str = DEFAULT_GREETING
    # Offline responder: pause before each word-sized delta, to imitate a model's pace.
    llm_token_delay_ms: int = Field(default=0, ge=0, le=10_000)

    # Provider chain for requests that name none, comma-separated (e.g. "openai,local").
    llm_providers: str = "local"
    # OpenAI: enabled when OPENAI_API_KEY (or a tenant's OPENAI_API_KEY__<TENANT>) is set, or when
    # a base URL names a self-hosted compatible server (vLLM, Ollama), which needs no key.
    openai_base_url: str = Field(
        default="", validation_alias=AliasChoices("OPENAI_BASE_URL", "VOICEAI_OPENAI_BASE_URL")
    )
    # Set for Azure OpenAI (e.g. "2024-10-21"): OPENAI_BASE_URL is then the resource endpoint and
    # the model is the deployment name.
    llm_openai_api_version: str = ""
    llm_openai_model: str = "gpt-4o-mini"
    llm_openai_token_param: Literal["auto", "max_tokens", "max_completion_tokens"] = "auto"
    llm_openai_connect_timeout_ms: int = Field(default=1000, ge=50, le=60_000)
    llm_openai_first_token_timeout_ms: int = Field(default=3000, ge=50, le=120_000)
    llm_openai_inactivity_timeout_ms: int = Field(default=5000, ge=50, le=120_000)
    # Everything before the first token, retries and their waits included.
    llm_openai_deadline_ms: int = Field(default=5000, ge=50, le=300_000)
    llm_openai_max_attempts: int = Field(default=3, ge=1, le=10)
    # Concurrent streams per key on this instance (the provider's limit / replicas sharing the key).
    llm_openai_cap: int = Field(default=64, ge=1, le=100_000)
    llm_openai_queue_timeout_ms: int = Field(default=50, ge=0, le=60_000)
    # Exact-repeat reply cache per tenant in Redis (REDIS_URL); off by default.
    llm_reply_cache: bool = False
    llm_reply_cache_ttl_s: int = Field(default=3600, ge=1, le=30 * 86400)
    llm_reply_cache_max_chars: int = Field(default=2000, ge=1, le=100_000)

    def default_chain(self) -> tuple[str, ...]:
        return tuple(n.strip().lower() for n in self.llm_providers.split(",") if n.strip())

    def openai_options(self) -> OpenAIOptions:
        return OpenAIOptions(
            base_url=self.openai_base_url.strip(),
            api_version=self.llm_openai_api_version.strip(),
            model=self.llm_openai_model,
            token_param=self.llm_openai_token_param,
            connect_timeout_s=self.llm_openai_connect_timeout_ms / 1000,
            first_token_timeout_s=self.llm_openai_first_token_timeout_ms / 1000,
            inactivity_timeout_s=self.llm_openai_inactivity_timeout_ms / 1000,
            deadline_s=self.llm_openai_deadline_ms / 1000,
            max_attempts=self.llm_openai_max_attempts,
            cap=self.llm_openai_cap,
            queue_timeout_s=self.llm_openai_queue_timeout_ms / 1000,
        )


def make_engine(settings: Settings) -> ChatModel:
    """Build the configured local engine; the offline responder gets its settings, others none."""
    cls = registry.load(settings.llm_engine, REGISTRY)
    if isinstance(cls, type) and issubclass(cls, OfflineResponder):
        return cls(
            default_reply=settings.llm_default_reply,
            greeting=settings.llm_greeting,
            token_delay_ms=settings.llm_token_delay_ms,
        )
    return cls()


def make_chain(
    settings: Settings,
    local: ChatModel,
    environ: Mapping[str, str] | None = None,
    keys: KeySource | None = None,
) -> tuple[ProviderChain, list[Any]]:
    """The providers this instance can run and the default chain; checked at start-up so a
    misconfiguration fails the process with the variable to fix, not the first call. Cloud
    providers get their keys from ``keys`` (default: ``environ``'s, ``EnvKeySource``)."""
    env = EnvKeySource(environment() if environ is None else environ)
    chain = settings.default_chain()
    for name in chain:
        if name not in KNOWN_PROVIDERS["llm"]:
            raise FailedPrecondition(
                f"VOICEAI_LLM_PROVIDERS: unknown provider {name!r}; use {', '.join(KNOWN_PROVIDERS['llm'])}"
            )
    providers: dict[str, ChatModel] = {"local": local}
    cloud: list[Any] = []  # providers built here, closed with the host
    for spec in load_specs(CLOUD):
        if spec.configured(settings, env):
            provider = spec.build(settings, keys or env)
            providers[spec.name] = provider
            cloud.append(provider)
        elif spec.name in chain:
            log.warning("VOICEAI_LLM_PROVIDERS names %s but %s", spec.name, spec.unconfigured_hint)
    if not any(n in providers for n in chain):
        raise FailedPrecondition(
            f"VOICEAI_LLM_PROVIDERS={settings.llm_providers!r}: none of these providers is configured here"
            f" (configured: {', '.join(sorted(providers))})"
        )
    return ProviderChain(providers, chain), cloud


def build_host(
    settings: Settings,
    engine: ChatModel | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    redis: RedisSettings | None = None,
) -> ServiceHost:
    """``engine`` (default: the configured local engine) is the chain's "local" provider."""
    keys = tenant_key_store(EnvKeySource(environment() if environ is None else environ))  # BYOK first
    chain, cloud = make_chain(settings, engine or make_engine(settings), environ, keys=keys)
    served: ChatModel = chain
    closers = [c.aclose for c in cloud]
    if keys is not None:
        closers.append(keys.aclose)
    if settings.llm_reply_cache:
        redis_settings = redis or RedisSettings()
        # The tag: a changed default model or chain must not serve answers the old one gave.
        tag = f"{settings.llm_openai_model}|{','.join(chain.default_chain)}|{settings.llm_max_tokens}"
        cache = ReplyCache(
            open_redis(redis_settings.model_copy(update={"client_name": "llm_svc"})),
            redis_settings.key_prefix,
            settings.llm_reply_cache_ttl_s,
            settings.llm_reply_cache_max_chars,
            tag,
        )
        served = CachingChatModel(chain, cache)
        closers.append(cache.aclose)
    budgets = ContextBudgets()  # loads the default vocabulary in a thread from now (issue 17)
    servicer = LanguageModelServicer(served, settings.llm_max_tokens, budgets, settings.llm_openai_model)
    host = single_service_host(
        settings,
        "voiceai.llm.v1.LanguageModelService",
        llm_pb2_grpc.add_LanguageModelServiceServicer_to_server,
        servicer,
    )
    host.on_stop.extend(closers)
    attach_capacity(host)  # issue 15: NOT_SERVING for new work at VOICEAI_MAX_STREAMS
    return host


async def build_ready(settings: Settings) -> ServiceHost:
    """Nothing to load for the offline responder; the engine is built before SERVING."""
    return build_host(settings)
