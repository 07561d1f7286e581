"""Turn-taking text heuristics: trailing off mid-number/email/filler waits longer; backchannels
never interrupt."""

from __future__ import annotations

import pytest

from gateway.agents import TurnTakingProfile
from gateway.session import endpointing

P = TurnTakingProfile(end_of_turn_silence_ms=500, incomplete_turn_silence_ms=1500, min_interruption_words=1)


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("My number is 555 12", "number"),
        ("my number is five five five", "number"),
        ("It's 415-555", "number"),
        ("my email is john.smith@", "email"),
        ("my email is john dot smith at", "email"),
        ("it's jane@example", "email"),
        ("I want to book um", "filler"),
        ("I'd like a cleaning and", "filler"),
        ("My name is", "filler"),
    ],
)
def test_incomplete_transcripts_wait_longer(text: str, why: str) -> None:
    assert endpointing.looks_incomplete(text) == why
    assert endpointing.end_of_turn_silence_ms(text, P) == (1500, why)


@pytest.mark.parametrize(
    "text",
    [
        "What are your opening hours?",
        "Four.",
        "My number is 415 555 1234.",
        "my email is jane@example.com",
        "Thanks, goodbye.",
        "I'd like to book a cleaning.",
    ],
)
def test_complete_transcripts_end_the_turn_on_time(text: str) -> None:
    assert endpointing.looks_incomplete(text) is None
    assert endpointing.end_of_turn_silence_ms(text, P) == (500, None)


@pytest.mark.parametrize("text", ["uh-huh", "Mm-hmm.", "okay", "Yeah, right.", "OK sure", "I see."])
def test_backchannels_do_not_interrupt(text: str) -> None:
    assert endpointing.is_backchannel(text)
    assert not endpointing.interrupts(text, P)


@pytest.mark.parametrize("text", ["stop", "Wait, stop.", "okay but what about Friday", "No."])
def test_real_words_interrupt(text: str) -> None:
    assert endpointing.interrupts(text, P)


def test_min_words_is_configurable() -> None:
    two = TurnTakingProfile(min_interruption_words=2)
    assert not endpointing.interrupts("stop", two)
    assert endpointing.interrupts("okay, stop talking", two)
    assert not endpointing.interrupts("", P)
