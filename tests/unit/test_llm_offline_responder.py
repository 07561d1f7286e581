"""The offline responder: which reply it picks, how it streams it, and that it stops when closed."""

from __future__ import annotations

import asyncio
import time

import pytest

from llm_svc.providers.base import (
    ChatEvent,
    ChatRequest,
    Completion,
    Intent,
    Message,
    ResponderRules,
    TokenDelta,
)
from llm_svc.providers.offline_responder import OfflineResponder

RULES = ResponderRules(
    intents=(
        Intent(("hours", "open"), "We open at nine."),
        Intent(("book an appointment", "booking"), "Booking for you: {user}"),
        Intent(("hours",), "Never reached: the first matching intent answers."),
    ),
    default_reply="Default: {user}",
)


def ask(said: str, rules: ResponderRules = RULES, **kw: object) -> ChatRequest:
    return ChatRequest(
        (Message("system", "You are a dental receptionist."), Message("user", said)),
        rules=rules,
        **kw,  # type: ignore[arg-type]
    )


async def collect(engine: OfflineResponder, request: ChatRequest) -> tuple[list[str], Completion]:
    events: list[ChatEvent] = [e async for e in engine.stream(request)]
    *deltas, done = events
    assert isinstance(done, Completion) and all(isinstance(d, TokenDelta) for d in deltas)
    return [d.text for d in deltas], done  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("said", "reply"),
    [
        ("What are your opening HOURS?", "We open at nine."),
        ("are you OPEN on saturday", "We open at nine."),
        (
            "I'd like to book   an\tappointment please",
            "Booking for you: I'd like to book an appointment please",
        ),
        ("Booking, please.", "Booking for you: Booking, please."),
        # Word boundaries: "open" is not in "opener", "booking" is not in "rebookings".
        ("where is the can opener", "Default: where is the can opener"),
        ("rebookings", "Default: rebookings"),
        ("", "Default: "),
    ],
)
def test_first_matching_intent_answers_else_the_rules_default(said: str, reply: str) -> None:
    assert OfflineResponder().choose_reply(ask(said)) == reply


def test_without_rules_the_service_default_repeats_the_caller() -> None:
    engine = OfflineResponder(default_reply="Offline agent here. You said: {user}.")
    assert (
        engine.choose_reply(ask("  hello   there ", ResponderRules()))
        == "Offline agent here. You said: hello there."
    )
    assert OfflineResponder().choose_reply(ask("hi", ResponderRules())) == (
        "I'm the offline demo agent. I heard you say: hi"
    )


def test_blank_keywords_never_match_and_braces_stay_literal() -> None:
    rules = ResponderRules((Intent(("", "  "), "blank"), Intent(("price",), "It costs {amount}.")), "")
    engine = OfflineResponder(default_reply="fallback")
    assert engine.choose_reply(ask("anything", rules)) == "fallback"
    assert engine.choose_reply(ask("the price?", rules)) == "It costs {amount}."


def test_greets_when_the_caller_has_not_spoken_yet() -> None:
    engine = OfflineResponder(greeting="Hi, this is the demo line.")
    assert engine.choose_reply(ChatRequest((Message("system", "be nice"),), rules=RULES)) == (
        "Hi, this is the demo line."
    )
    after_agent = ChatRequest((Message("user", "hours?"), Message("assistant", "We open", interrupted=True)))
    assert engine.choose_reply(after_agent) == "Hi, this is the demo line."


async def test_streams_word_sized_deltas_and_counts_tokens() -> None:
    deltas, done = await collect(OfflineResponder(), ask("when are you open"))
    assert deltas == ["We ", "open ", "at ", "nine."]
    assert done == Completion("stop", 5 + 4, 4, "offline-responder")  # prompt: words of all messages


async def test_max_tokens_cuts_the_reply() -> None:
    deltas, done = await collect(OfflineResponder(), ask("when are you open", max_tokens=2))
    assert deltas == ["We ", "open "]
    assert done.finish_reason == "length" and done.completion_tokens == 2
    _, done = await collect(OfflineResponder(), ask("when are you open", max_tokens=4))
    assert done.finish_reason == "stop"


async def test_token_delay_paces_the_deltas() -> None:
    started = time.perf_counter()
    deltas, _ = await collect(OfflineResponder(token_delay_ms=30), ask("when are you open"))
    assert len(deltas) == 4 and time.perf_counter() - started >= 4 * 0.03


async def test_closing_the_stream_stops_it_at_once() -> None:
    stream = OfflineResponder(token_delay_ms=10_000).stream(ask("when are you open"))
    task = asyncio.ensure_future(stream.__anext__())
    await asyncio.sleep(0.05)  # inside the per-token delay
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    with pytest.raises(StopAsyncIteration):
        await stream.__anext__()  # a cancelled generator is finished: nothing more comes


def test_negative_delay_is_refused() -> None:
    with pytest.raises(ValueError, match="token_delay_ms"):
        OfflineResponder(token_delay_ms=-1)
