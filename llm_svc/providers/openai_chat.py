"""OpenAIChat: a ChatModel on the chat completions API of OpenAI, Azure OpenAI or any
OpenAI-compatible server (vLLM, Ollama, LM Studio ...), streamed with the ``openai`` SDK.

Where it points:
- ``base_url`` empty: api.openai.com. A compatible server: its ``.../v1`` URL (a self-hosted server
  needs no key; the SDK then sends a placeholder bearer the server ignores).
- ``api_version`` set: Azure OpenAI through ``AsyncAzureOpenAI``; ``base_url`` is the resource
  endpoint (``https://<resource>.openai.azure.com``) and the model name is the deployment name.

Retries: 429, 408/409 and 5xx answers and connection failures are retried with exponential backoff
and jitter (tenacity), waiting at least the provider's Retry-After, but only before the first token
and only within ``deadline_s`` for everything before it: a retry after words went out would repeat
them. A Retry-After beyond the deadline gives up at once, so the chain can fall back. A first token
slower than ``first_token_timeout_s`` is not retried (a slow provider stays slow within a turn); the
chain falls back instead. After the first token a gap over ``inactivity_timeout_s`` or a dropped
connection ends the stream with a ProviderError the chain turns into a clear status.

Keys: ``OPENAI_API_KEY`` or the tenant's ``OPENAI_API_KEY__<TENANT>`` per stream (common.providers);
one SDK client per key fingerprint, at most ``max_clients``, least recently used closed first.
Concurrency: one ProviderLimiter slot per stream per key, held until the stream ends.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import grpc
import httpx
import openai
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, stop_before_delay
from tenacity.wait import wait_exponential_jitter

from common import context
from common.errors import FailedPrecondition
from common.provider_clients import ClientCache
from common.providers import (
    EnvKeySource,
    KeySource,
    ProviderError,
    ProviderKey,
    ProviderLimiter,
    ProviderSpec,
    retry_after_s,
)
from llm_svc.providers.base import ChatEvent, ChatRequest, Completion, FinishReason, TokenDelta, ToolCallDelta
from llm_svc.providers.openai_wire import to_messages, to_tools

if TYPE_CHECKING:
    from llm_svc.app import Settings

log = logging.getLogger(__name__)

OPENAI_URL = "https://api.openai.com/v1"
RETRYABLE_KINDS = frozenset({"rate_limited", "server_error", "connect"})
_FINISH: dict[str, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    "content_filter": "stop",  # the text so far is all there is; the proto has no better reason
}


@dataclass(frozen=True, slots=True)
class OpenAIOptions:
    """Where and how to call the API; every duration bounds a wait so nothing can hang."""

    base_url: str = ""
    api_version: str = ""
    model: str = "gpt-4o-mini"
    # "auto": max_completion_tokens for OpenAI and Azure (reasoning models refuse max_tokens),
    # max_tokens for compatible servers (older vLLM/Ollama know only that one).
    token_param: Literal["auto", "max_tokens", "max_completion_tokens"] = "auto"
    key_env: str = "OPENAI_API_KEY"
    connect_timeout_s: float = 1.0
    first_token_timeout_s: float = 3.0
    inactivity_timeout_s: float = 5.0
    deadline_s: float = 5.0
    max_attempts: int = 3
    backoff_s: float = 0.1
    backoff_max_s: float = 2.0
    jitter_s: float = 0.1
    cap: int = 64
    queue_timeout_s: float = 0.05
    max_clients: int = 32

    @property
    def self_hosted(self) -> bool:
        return bool(self.base_url) and not self.api_version

    def max_tokens_field(self) -> str:
        if self.token_param != "auto":
            return self.token_param
        return "max_tokens" if self.self_hosted else "max_completion_tokens"


def classify(error: BaseException, model: str, started: bool) -> ProviderError:
    """The SDK's exception as a ProviderError: kind, retry hint, whether to fall back, status."""
    if isinstance(error, ProviderError):
        return error
    when = "after the reply started" if started else "before the first token"
    if isinstance(error, openai.APIStatusError):
        status = error.status_code
        code = error.body.get("code") if isinstance(error.body, dict) else None
        what = f"HTTP {status}" + (f" {code}" if isinstance(code, str) else "")
        hint = retry_after_s(error.response.headers)
        if status == 429:
            return ProviderError(
                f"openai rate-limited the request ({what})", kind="rate_limited", retry_after_s=hint
            )
        if status >= 500 or status in (408, 409):
            return ProviderError(f"openai failed ({what}) {when}", kind="server_error", retry_after_s=hint)
        if status in (401, 403):
            # The deployment's (or tenant's) key, not the caller's request: the next provider may serve.
            return ProviderError(f"openai refused the API key ({what}); check OPENAI_API_KEY", kind="auth")
        err = ProviderError(
            f"openai refused the request ({what}) for model {model!r}; check the agent's model, tools"
            " and conversation",
            kind="bad_request",
            fallback=False,
        )
        err.code = grpc.StatusCode.INVALID_ARGUMENT
        return err
    if isinstance(error, openai.APITimeoutError | TimeoutError):
        return ProviderError(f"openai timed out {when}", kind="timeout")
    if isinstance(error, openai.APIConnectionError):
        kind = "disconnect" if started else "connect"
        return ProviderError(f"openai connection failed {when}", kind=kind)
    return ProviderError(f"openai failed {when} ({type(error).__name__})", kind="error")


class _Reply:
    """Turns chunks into events and keeps what the Completion needs."""

    __slots__ = ("cached_tokens", "completion_tokens", "finish", "pieces", "prompt_tokens", "usage_seen")

    def __init__(self) -> None:
        self.finish: str | None = None
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.usage_seen = False
        self.pieces = 0
        self.cached_tokens = 0

    def events(self, chunk: Any) -> list[ChatEvent]:
        out: list[ChatEvent] = []
        if chunk.usage is not None:
            self.usage_seen = True
            self.prompt_tokens = chunk.usage.prompt_tokens or 0
            self.completion_tokens = chunk.usage.completion_tokens or 0
            details = getattr(chunk.usage, "prompt_tokens_details", None)
            self.cached_tokens = (getattr(details, "cached_tokens", 0) or 0) if details else 0
        for choice in chunk.choices:
            if choice.index != 0:
                continue  # n is never set, so only choice 0 exists; ignore anything else
            delta = choice.delta
            if delta.content:
                out.append(TokenDelta(delta.content))
            for call in delta.tool_calls or ():
                fn = call.function
                out.append(
                    ToolCallDelta(
                        call.index,
                        call.id or "",
                        (fn.name or "") if fn else "",
                        (fn.arguments or "") if fn else "",
                    )
                )
            if choice.finish_reason:
                self.finish = choice.finish_reason
        self.pieces += len(out)
        return out

    def completion(self, engine: str, key_label: str = "") -> Completion:
        # A compatible server may ignore include_usage: count pieces rather than report nothing.
        tokens = self.completion_tokens if self.usage_seen else self.pieces
        finish = _FINISH.get(self.finish or "stop", "stop")
        cached = min(self.cached_tokens, self.prompt_tokens)
        return Completion(
            finish, self.prompt_tokens, tokens, engine, cached_prompt_tokens=cached, key_label=key_label
        )


async def _close_client(client: openai.AsyncOpenAI) -> None:
    await client.close()


class OpenAIChat:
    """Chat completions over the openai SDK, streamed (see the module docstring)."""

    name = "openai"

    def __init__(self, options: OpenAIOptions, keys: KeySource) -> None:
        self.options = options
        self._keys = keys
        self.limiter = ProviderLimiter("llm", "openai", options.cap, options.queue_timeout_s)
        self._clients: ClientCache[openai.AsyncOpenAI] = ClientCache(
            self._make_client, _close_client, options.max_clients
        )
        # Loaded once here: a client per new key would otherwise load the CA bundle on the
        # event loop (~20-70 ms of CPU during which no stream of the process moves).
        self._tls = httpx.create_ssl_context()

    def _make_client(self, key: ProviderKey | None) -> openai.AsyncOpenAI:
        api_key = key.value if key else "no-key"  # a self-hosted server needs none; the SDK wants one
        o = self.options
        timeout = openai.Timeout(
            connect=o.connect_timeout_s,
            # A backstop only: the first-token and inactivity timeouts below are the real bounds.
            read=max(o.first_token_timeout_s, o.inactivity_timeout_s) + 1.0,
            write=o.connect_timeout_s,
            pool=o.connect_timeout_s,
        )
        http = openai.DefaultAsyncHttpxClient(verify=self._tls)  # closed with the client
        # max_retries=0: retries are ours (only before the first token, within the deadline).
        if o.api_version:
            return openai.AsyncAzureOpenAI(
                azure_endpoint=o.base_url,
                api_version=o.api_version,
                api_key=api_key,
                max_retries=0,
                timeout=timeout,
                http_client=http,
            )
        return openai.AsyncOpenAI(
            base_url=o.base_url or OPENAI_URL,
            api_key=api_key,
            max_retries=0,
            timeout=timeout,
            http_client=http,
        )

    async def _key(self) -> ProviderKey | None:
        key = await self._keys.key_for(self.options.key_env, context.tenant_id())
        if key is None and not self.options.self_hosted:
            raise ProviderError(
                f"no OpenAI API key for this tenant: set {self.options.key_env} (or"
                f" {self.options.key_env}__<TENANT>) on llm_svc",
                kind="no_key",
            )
        return key

    def params(self, request: ChatRequest) -> dict[str, Any]:
        """The create() arguments for ``request`` (public for tests and the cache's key)."""
        o = self.options
        params: dict[str, Any] = {
            "model": request.model or o.model,
            "messages": to_messages(request.messages),
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if request.max_tokens:
            params[o.max_tokens_field()] = request.max_tokens
        if request.temperature:  # 0 = the model's default (some models accept no other value)
            params["temperature"] = request.temperature
        if request.tools:
            params["tools"] = to_tools(request.tools)
        return params

    async def aclose(self) -> None:
        await self._clients.aclose()

    async def stream(self, request: ChatRequest) -> AsyncIterator[ChatEvent]:
        key = await self._key()
        params = self.params(request)
        engine = f"openai/{params['model']}"
        async with self.limiter.slot(key), self._clients.lease(key) as client:
            try:
                chunks, reply, first = await self._open(client, params)
            except ProviderError as e:
                if e.kind != "auth" or key is None:
                    raise
                # Which key was refused, without revealing it: its label and fingerprint.
                raise ProviderError(
                    f"{e.message} (the {key.label} key, fingerprint {key.fingerprint})", kind="auth"
                ) from e
            try:
                for event in first:
                    yield event
                while True:
                    try:
                        async with asyncio.timeout(self.options.inactivity_timeout_s):
                            chunk = await chunks.__anext__()
                    except StopAsyncIteration:
                        break
                    except Exception as e:
                        raise classify(e, params["model"], started=True) from e
                    for event in reply.events(chunk):
                        yield event
                if reply.finish is None:
                    raise ProviderError("openai's stream ended without a finish reason", kind="disconnect")
                yield reply.completion(engine, key.label if key is not None else "")
            finally:
                await chunks.close()  # prompt on cancel too: the HTTP response goes at once

    async def _open(
        self, client: openai.AsyncOpenAI, params: dict[str, Any]
    ) -> tuple[Any, _Reply, list[ChatEvent]]:
        """Attempts (with retries) until the first token, or the end of an empty reply."""
        o = self.options
        started = time.monotonic()
        backoff = wait_exponential_jitter(multiplier=o.backoff_s, max=o.backoff_max_s, jitter=o.jitter_s)

        def wait(state: Any) -> float:
            err = state.outcome.exception()
            hint = err.retry_after_s if isinstance(err, ProviderError) else None
            return max(backoff(state), hint or 0.0)

        def note(state: Any) -> None:
            err = state.outcome.exception()
            log.info(
                "openai attempt %d failed (%s); retrying in %.0f ms",
                state.attempt_number,
                getattr(err, "kind", type(err).__name__),
                state.upcoming_sleep * 1000,
            )

        retrying = AsyncRetrying(
            stop=stop_after_attempt(o.max_attempts) | stop_before_delay(o.deadline_s),
            wait=wait,
            before_sleep=note,
            retry=retry_if_exception(lambda e: isinstance(e, ProviderError) and e.kind in RETRYABLE_KINDS),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                remaining = o.deadline_s - (time.monotonic() - started)
                return await self._attempt(client, params, min(o.first_token_timeout_s, remaining))
        raise AssertionError("unreachable: tenacity returns or re-raises")  # pragma: no cover

    async def _attempt(
        self, client: openai.AsyncOpenAI, params: dict[str, Any], timeout_s: float
    ) -> tuple[Any, _Reply, list[ChatEvent]]:
        chunks: Any = None
        reply = _Reply()
        try:
            async with asyncio.timeout(max(timeout_s, 0.0)):
                chunks = await client.chat.completions.create(**params)
                while True:
                    try:
                        events = reply.events(await chunks.__anext__())
                    except StopAsyncIteration:
                        return chunks, reply, []
                    if events:
                        return chunks, reply, events
        except BaseException as e:
            if chunks is not None:
                await chunks.close()
            if isinstance(e, Exception):
                raise classify(e, params["model"], started=False) from e
            raise


# ---------------------------------------------------------------------------- registration


def openai_configured(settings: Settings, env: EnvKeySource) -> bool:
    """A self-hosted/Azure URL, the deployment's key or any tenant's own key enables OpenAI."""
    return bool(settings.openai_base_url.strip()) or env.has_any(settings.openai_options().key_env)


def build_openai(settings: Settings, keys: KeySource, /, **_: Any) -> OpenAIChat:
    """The OpenAI chat provider from llm_svc's settings; FailedPrecondition names a bad variable."""
    if settings.llm_openai_api_version and not settings.openai_base_url.strip():
        raise FailedPrecondition(
            "VOICEAI_LLM_OPENAI_API_VERSION is set (Azure OpenAI) but OPENAI_BASE_URL is empty: set it to"
            " the resource endpoint, https://<resource>.openai.azure.com"
        )
    return OpenAIChat(settings.openai_options(), keys)


PROVIDER: ProviderSpec[Settings, OpenAIChat] = ProviderSpec(
    "openai",
    openai_configured,
    build_openai,
    unconfigured_hint="neither OPENAI_API_KEY nor OPENAI_BASE_URL is set",
)
