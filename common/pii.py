"""PII redaction for stored transcripts: card numbers (Luhn-checked), e-mail addresses, phone
numbers and SSN-like numbers become ``[CARD]``, ``[EMAIL]``, ``[PHONE]``, ``[SSN]``.

Pure functions, run on finished turns (never per audio frame). Order matters: e-mails first
(they contain digits), then cards (a 13-19 digit run passing Luhn), SSN-like ``ddd-dd-dddd``,
then phone numbers (7+ digits with the usual separators), so a card is never half-eaten as a
phone number. Digits written as words ("four one one one") are out of reach of patterns.
"""

from __future__ import annotations

import re

_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
# 13-19 digits, optionally grouped by single spaces or dashes.
_CARD = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])")
_SSN = re.compile(r"(?<!\d)\d{3}[- ]\d{2}[- ]\d{4}(?!\d)")
# +country, area code in parentheses, groups separated by space, dot or dash; 7-15 digits.
_PHONE = re.compile(r"(?<![\w+])(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,4}\)[ .-]?)?\d(?:[ .-]?\d){6,14}(?!\d)")


def luhn_valid(digits: str) -> bool:
    """Whether ``digits`` (digits only) passes the Luhn check used by payment cards."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _card(match: re.Match[str]) -> str:
    digits = re.sub(r"\D", "", match.group())
    return "[CARD]" if 13 <= len(digits) <= 19 and luhn_valid(digits) else match.group()


def _phone(match: re.Match[str]) -> str:
    digits = sum(c.isdigit() for c in match.group())
    return "[PHONE]" if 7 <= digits <= 15 else match.group()


def redact(text: str) -> str:
    """``text`` with PII replaced by placeholders."""
    if not any(c.isdigit() or c == "@" for c in text):
        return text
    text = _EMAIL.sub("[EMAIL]", text)
    text = _CARD.sub(_card, text)
    text = _SSN.sub("[SSN]", text)
    return _PHONE.sub(_phone, text)


__all__ = ["luhn_valid", "redact"]
