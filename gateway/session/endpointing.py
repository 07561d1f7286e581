"""Text-side turn-taking decisions: is the caller done, and do their words interrupt?

Pure functions over transcripts, so they are cheap (called per STT event, never per frame)
and unit-testable. Heuristics are deliberately conservative: waiting a second longer for a
caller who trails off mid-number costs far less than cutting them off.
"""

from __future__ import annotations

import re

from gateway.agents import TurnTakingProfile

_WORD = re.compile(r"[a-z0-9@']+(?:[.\-_][a-z0-9]+)*")

# Sounds and words that acknowledge without taking the floor.
BACKCHANNELS = frozenset(
    [
        "uh-huh",
        "uhhuh",
        "uh",
        "huh",
        "mm",
        "mhm",
        "mm-hmm",
        "mmhmm",
        "hmm",
        "hm",
        "okay",
        "ok",
        "yeah",
        "yep",
        "yes",
        "yup",
        "right",
        "sure",
        "alright",
        "aha",
        "ah",
        "oh",
        "i",
        "see",
        "got",
        "it",
        "cool",
        "nice",
        "great",
    ]
)
# Words after which a sentence is rarely finished.
TRAILING_FILLERS = frozenset(
    [
        "um",
        "uh",
        "er",
        "erm",
        "hmm",
        "so",
        "and",
        "but",
        "or",
        "because",
        "like",
        "well",
        "the",
        "a",
        "an",
        "to",
        "of",
        "with",
        "my",
        "your",
        "for",
        "is",
        "was",
        "at",
        "in",
        "on",
        "from",
        "than",
        "then",
        "if",
    ]
)
NUMBER_WORDS = frozenset(
    [
        "zero",
        "oh",
        "one",
        "two",
        "three",
        "four",
        "five",
        "six",
        "seven",
        "eight",
        "nine",
        "ten",
        "hundred",
        "thousand",
        "double",
        "triple",
    ]
)
EMAIL_JOINERS = frozenset(["at", "dot", "underscore", "dash", "hyphen"])


def words(text: str) -> list[str]:
    """The lower-cased words of ``text``."""
    return _WORD.findall(text.lower())


def meaningful_word_count(text: str) -> int:
    """Words that are not backchannels ("uh-huh", "okay", "yeah")."""
    return sum(1 for w in words(text) if w not in BACKCHANNELS)


def is_backchannel(text: str) -> bool:
    """Whether ``text`` only acknowledges ("uh-huh", "okay") rather than takes the floor."""
    return bool(words(text)) and meaningful_word_count(text) == 0


def _trailing_digit_count(tokens: list[str]) -> int:
    count = 0
    for token in reversed(tokens):
        digits = sum(ch.isdigit() for ch in token)
        if token in NUMBER_WORDS:
            count += 1
        elif digits and digits >= len(token.replace("-", "").replace(".", "")) - 1:
            count += digits
        else:
            break
    return count


def looks_incomplete(text: str) -> str | None:
    """Why the transcript seems unfinished ("filler", "number", "email"), or None."""
    tokens = words(text)
    if not tokens:
        return None
    last = tokens[-1]
    if "@" in text and not re.search(r"@\S*\.[a-z]{2,}\b", text.lower()):
        return "email"
    if last in EMAIL_JOINERS or last.endswith("@"):
        return "email"
    if last in TRAILING_FILLERS:
        return "filler"
    digits = _trailing_digit_count(tokens)
    # Phone, card and account numbers are dictated in groups: a trailing group of 2..9 digits
    # (or number words) without a complete 10+ digit number means more is likely coming.
    if 2 <= digits < 10:
        return "number"
    return None


def end_of_turn_silence_ms(text: str, profile: TurnTakingProfile) -> tuple[int, str | None]:
    """Silence to wait after the caller's speech before their turn is over, and why."""
    reason = looks_incomplete(text)
    if reason:
        return profile.incomplete_turn_silence_ms, reason
    return profile.end_of_turn_silence_ms, None


def interrupts(text: str, profile: TurnTakingProfile) -> bool:
    """Do these caller words take the floor from the agent?"""
    return meaningful_word_count(text) >= max(1, profile.min_interruption_words)
