"""PII redaction of held transcript text: cards (Luhn), e-mails, phone numbers, SSN-like numbers."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from common.pii import luhn_valid, redact


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("my card is 4111 1111 1111 1111 thanks", "my card is [CARD] thanks"),
        ("card 4111-1111-1111-1111.", "card [CARD]."),
        ("amex 378282246310005", "amex [CARD]"),
        ("mail me at jane.doe+x@example.co.uk please", "mail me at [EMAIL] please"),
        ("call me on +1 (415) 555-0123 tonight", "call me on [PHONE] tonight"),
        ("my number is 020 7946 0958", "my number is [PHONE]"),
        ("ssn 123-45-6789 ok", "ssn [SSN] ok"),
        ("order 42 for 3 people at 7:30", "order 42 for 3 people at 7:30"),
        ("the year 2024 and room 1204", "the year 2024 and room 1204"),
    ],
)
def test_redacts_what_it_should_and_leaves_ordinary_numbers(text: str, expected: str) -> None:
    assert redact(text) == expected


def test_a_card_length_number_failing_luhn_is_not_a_card() -> None:
    assert not luhn_valid("4111111111111112")
    assert "[CARD]" not in redact("ref 4111 1111 1111 1112")


def _with_luhn(body: str) -> str:
    for check in "0123456789":
        if luhn_valid(body + check):
            return body + check
    raise AssertionError("unreachable")


@given(st.text(alphabet="0123456789", min_size=15, max_size=15), st.sampled_from([" ", "-", ""]))
def test_every_luhn_valid_16_digit_card_is_redacted_whatever_the_grouping(body: str, sep: str) -> None:
    card = _with_luhn(body)
    grouped = sep.join(card[i : i + 4] for i in range(0, 16, 4))
    out = redact(f"it is {grouped} ok")
    assert card not in out.replace(sep, "") and out.startswith("it is [")


def test_text_without_digits_or_at_signs_is_returned_as_is() -> None:
    text = "nothing to see here"
    assert redact(text) is text
