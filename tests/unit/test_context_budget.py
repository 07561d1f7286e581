"""The LLM context budget: real BPE counts from the packaged vocabulary, oldest turns dropped
first (never the system prompt or the current turn), dropping in steps so the prefix is stable."""

from __future__ import annotations

import asyncio

import pytest

from llm_svc.context_budget import MESSAGE_OVERHEAD, ContextBudgets, TokenCounter, encoding_name, fit
from llm_svc.providers.base import ChatRequest, Message, ToolCall


@pytest.fixture(scope="module")
def counter() -> TokenCounter:
    c = TokenCounter("o200k_base")
    asyncio.run(c.ready())
    return c


def conversation(turns: int) -> list[Message]:
    out = [Message("system", "You are the receptionist of Bright Smile Dental. Be brief and friendly.")]
    for i in range(turns):
        out.append(
            Message("user", f"Turn {i}: could you tell me about appointment slot number {i} next week?")
        )
        out.append(
            Message("assistant", f"Sure, slot {i} is open on Tuesday at {i % 12 + 1} pm. Shall I book it?")
        )
    return out


def test_counts_are_the_models_bpe_tokens(counter: TokenCounter) -> None:
    assert counter.count("Hello there, how are you?") == 7  # o200k_base, as OpenAI counts it
    assert counter.message(Message("user", "Hello there, how are you?")) == 7 + MESSAGE_OVERHEAD
    call = Message("assistant", "", tool_calls=(ToolCall("c1", "book", '{"slot": 3}'),))
    assert counter.message(call) > MESSAGE_OVERHEAD
    assert encoding_name("gpt-4o-mini") == "o200k_base" and encoding_name("gpt-4") == "cl100k_base"
    assert encoding_name("my-local-model") == "o200k_base"  # unknown: approximated


def test_a_60_turn_call_stays_within_budget_with_the_last_turns_verbatim(counter: TokenCounter) -> None:
    budget = 800
    history = conversation(0)
    previous_start = None
    stable = 0
    for turn in range(60):
        history.append(
            Message("user", f"Turn {turn}: could you tell me about appointment slot number {turn} next week?")
        )
        fitted = fit(ChatRequest(messages=tuple(history)), budget, counter)
        sent = fitted.request.messages
        assert fitted.prompt_tokens <= budget
        assert fitted.prompt_tokens == sum(counter.message(m) for m in sent)
        assert sent[0] == history[0]  # the system prompt, always
        assert sent[-1] == history[-1]  # the current turn, verbatim
        # The turns kept are the most recent ones, whole and unchanged, in order.
        assert list(sent[1:]) == history[len(history) - len(sent) + 1 :]
        assert sent[1].role == "user"
        if previous_start is not None and sent[1] == previous_start:
            stable += 1
        previous_start = sent[1]
        history.append(
            Message("assistant", f"Sure, slot {turn} is open on Tuesday at 3 pm. Shall I book it?")
        )
    # Dropping in blocks of turns keeps the (cacheable) prefix for several turns in a row.
    assert stable >= 45, stable


def test_the_current_turn_stays_even_alone_over_budget(counter: TokenCounter) -> None:
    long = Message("user", "word " * 500)
    messages = (*conversation(3), long)
    fitted = fit(ChatRequest(messages=messages), 300, counter)
    assert fitted.request.messages == (messages[0], long) and fitted.dropped_turns == 3
    assert fit(ChatRequest(messages=messages), 0, counter).request.messages == messages  # no budget


def test_a_tool_exchange_is_dropped_with_its_turn(counter: TokenCounter) -> None:
    messages = (
        Message("system", "sys"),
        Message("user", "book slot one " * 20),
        Message("assistant", "", tool_calls=(ToolCall("c1", "book", '{"slot": 1}'),)),
        Message("tool", "booked", tool_call_id="c1"),
        Message("assistant", "Booked."),
        Message("user", "thanks"),
    )
    fitted = fit(ChatRequest(messages=messages), 40, counter)
    assert [m.role for m in fitted.request.messages] == ["system", "user"]


async def test_budgets_wait_for_the_vocabulary_off_the_loop() -> None:
    budgets = ContextBudgets(preload=())
    fitted = await budgets.apply(ChatRequest(messages=tuple(conversation(30))), 300, "gpt-4o-mini")
    assert fitted.prompt_tokens <= 300 and fitted.dropped_turns > 0
