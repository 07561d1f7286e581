"""What one reply consumed, as the usage lines the ledger prices: input, cached input and
output tokens of the provider and model that answered (``Completion.engine`` is
``provider/model`` for cloud engines, the engine's name for local ones)."""

from __future__ import annotations

from common.gen.voiceai.common.v1 import usage_pb2
from common.pricing import line
from llm_svc.providers.base import Completion

# A reply replayed from the tenant's exact-repeat cache consumed nothing from any provider.
_NO_PROVIDER = "reply-cache"


def completion_usage(event: Completion) -> usage_pb2.Usage:
    """The reply's totals and its per-provider/model lines (zero-quantity lines omitted)."""
    usage = usage_pb2.Usage(
        llm_prompt_tokens=event.prompt_tokens, llm_completion_tokens=event.completion_tokens
    )
    if event.cached:
        return usage
    provider, _, model = event.engine.partition("/")
    provider = provider or _NO_PROVIDER
    cached = min(event.cached_prompt_tokens, event.prompt_tokens)
    for unit, count in (
        ("input_token", event.prompt_tokens - cached),
        ("cached_input_token", cached),
        ("output_token", event.completion_tokens),
    ):
        if count > 0:
            usage.lines.append(
                line("llm", provider, unit, count * 1000, model=model, key_label=event.key_label)
            )
    return usage


__all__ = ["completion_usage"]
