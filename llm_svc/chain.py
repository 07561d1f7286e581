"""ProviderChain: one ChatModel over an ordered list of providers, falling back before the first token.

A request runs on its own chain (``ChatRequest.providers``) or the service's default, resolved by
``common.providers.resolve_chain`` against the providers this instance has configured. A provider
that fails before its first token (after its own retries, or at once for errors it does not retry,
over its concurrency cap included) hands the request to the next one; each switch is counted and
logged. After the first token nothing is retried anywhere: the caller has heard the words, so a
failure ends the stream with a status that says the reply broke off (the gateway handles it).
When the last provider fails, its error is the answer: rate limits and caps as RESOURCE_EXHAUSTED
with a retry hint, timeouts as DEADLINE_EXCEEDED, provider outages as UNAVAILABLE, a missing or
refused key as FAILED_PRECONDITION, errors the caller must fix as they came.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import AsyncIterator, Mapping, Sequence

from common.errors import DeadlineExceeded, FailedPrecondition, ResourceExhausted, Unavailable, VoiceAIError
from common.providers import (
    KNOWN_PROVIDERS,
    ProviderError,
    failure_kind,
    may_fall_back,
    record_failure,
    record_fallback,
    resolve_chain,
)
from llm_svc.providers.base import ChatEvent, ChatModel, ChatRequest, Completion

SERVICE = "llm"
log = logging.getLogger(__name__)


async def close_stream(events: AsyncIterator[ChatEvent]) -> None:
    """Close an engine's stream now (async generators have ``aclose``; other iterators may not)."""
    aclose = getattr(events, "aclose", None)
    if aclose is not None:
        await aclose()


def final_error(provider: str, error: Exception) -> Exception:
    """What the client sees when ``provider`` was the chain's last hope."""
    if not isinstance(error, ProviderError):
        return error
    kind = error.kind
    message = f"llm provider {provider} failed: {error}"
    if kind == "rate_limited":
        return ResourceExhausted(
            f"{message}; retry later or add a fallback provider",
            retry_after_s=error.retry_after_s if error.retry_after_s is not None else 1.0,
            quota_subject=f"llm.{provider}.rate_limit",
        )
    if kind == "timeout":
        return DeadlineExceeded(f"{message}; the provider is slow, retry or add a fallback provider")
    if kind in ("server_error", "connect", "disconnect"):
        return Unavailable(f"{message}; retry shortly or add a fallback provider")
    if kind in ("auth", "no_key"):
        return FailedPrecondition(f"{message}; the operator must fix the key, or add a fallback provider")
    return error


class ProviderChain:
    """A ChatModel that runs each request on its provider chain (see the module docstring)."""

    name = "chain"

    def __init__(self, providers: Mapping[str, ChatModel], default_chain: Sequence[str]) -> None:
        self.providers = dict(providers)
        self.default_chain = tuple(default_chain)

    def links(self, request: ChatRequest) -> list[str]:
        """The provider names ``request`` runs on (raises InvalidArgument/FailedPrecondition)."""
        chain = resolve_chain(
            SERVICE, request.providers, self.default_chain, KNOWN_PROVIDERS[SERVICE], self.providers
        )
        return [link.name for link in chain]

    async def stream(self, request: ChatRequest) -> AsyncIterator[ChatEvent]:
        names = self.links(request)
        for i, name in enumerate(names):
            events = self.providers[name].stream(request)
            started = False
            try:
                async for event in events:
                    if not isinstance(event, Completion):
                        started = True
                        yield event
                    else:
                        yield dataclasses.replace(event, fell_back=True) if i else event
                return
            except Exception as error:
                record_failure(SERVICE, name, error)
                if started:
                    log.warning("llm provider %s broke off mid-reply (%s)", name, failure_kind(error))
                    raise _broke_off(name, error) from error
                if i + 1 < len(names) and may_fall_back(error):
                    record_fallback(SERVICE, name, names[i + 1], error)
                    continue
                raise final_error(name, error) from error
            finally:
                await close_stream(events)


def _broke_off(provider: str, error: Exception) -> VoiceAIError:
    if isinstance(error, VoiceAIError) and not isinstance(error, ProviderError):
        return error
    return Unavailable(
        f"the reply from llm provider {provider} broke off after it started ({failure_kind(error)}:"
        f" {error}); what was sent is all there is, ask again for the rest"
    )
