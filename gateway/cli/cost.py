"""The call's cost as the caller sees it at the end: its usage lines priced with the price book
(``VOICEAI_PRICE_BOOK_FILE`` or the built-in list prices). The tenant's call record holds the
authoritative price (with any contract prices); this is the same arithmetic, shown at once."""

from __future__ import annotations

from collections import defaultdict

from common.gen.voiceai.common.v1 import usage_pb2
from common.pricing import PricingSettings, book_from_settings


def estimate_cost(usage: usage_pb2.Usage) -> str:
    """``"$0.0123 (stt deepgram $0.0040, ...; price book v)"``, or "" when there are no lines."""
    if not usage.lines:
        return ""
    priced = usage_pb2.Usage()
    priced.CopyFrom(usage)
    book = book_from_settings(PricingSettings())
    book.price_usage(priced)
    parts: dict[str, int] = defaultdict(int)
    unpriced = set()
    for ln in priced.lines:
        name = f"{ln.component} {ln.provider}"
        parts[name] += ln.cost_micros
        if ln.unpriced:
            unpriced.add(name)
    shown = ", ".join(
        f"{name} ${micros / 1e6:.4f}{' + unpriced' if name in unpriced else ''}"
        for name, micros in sorted(parts.items())
    )
    lower = "at least " if priced.unpriced else ""  # an unpriced line's cost is unknown, not zero
    return f"{lower}${priced.cost_micros / 1e6:.4f} ({shown}; price book {book.version})"


__all__ = ["estimate_cost"]
