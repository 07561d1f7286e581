"""The price book: what one unit of each provider's usage costs, as versioned data.

Money is integer micro-dollars (1e-6 USD) on every line and every sum, computed from
``Decimal`` prices; a float never touches it. A line is priced once, with the book version in
force when its call is recorded, and names that version, so re-pricing history is an explicit
act, never a silent one. A line the book has no price for is marked ``unpriced`` (and counted
in ``voiceai_usage_unpriced_lines_total``): its cost is unknown, never a wrong zero.

The defaults are public list prices (USD, pay-as-you-go) for the seed's cost table: Deepgram
Nova-3 streaming per minute, Aura-2 and ElevenLabs per 1k characters, OpenAI per 1M
input/cached/output tokens per model, a telephony line per minute; the local engines cost zero.
Operators replace or extend them with a JSON file (``VOICEAI_PRICE_BOOK_FILE``), which must
carry its own version; tenants with a contract get per-tenant prices layered on top.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from pathlib import Path

from prometheus_client import Counter
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from common.errors import InvalidArgument
from common.gen.voiceai.common.v1 import usage_pb2

UNPRICED_LINES = Counter(
    "voiceai_usage_unpriced_lines_total",
    "Usage lines recorded without a price (the price book lacks the provider/model/unit).",
    ["component", "provider", "unit"],
)

UNITS = frozenset({"second", "minute", "character", "input_token", "cached_input_token", "output_token"})
COMPONENTS = frozenset({"stt", "llm", "tts", "telephony", "call"})
ANY_MODEL = "*"
_MICROS = Decimal(1_000_000)
_DATED = re.compile(r"-\d{4}-\d{2}-\d{2}$")
_MILLI = Decimal(1000)


@dataclass(frozen=True, slots=True)
class Price:
    """USD for ``per`` units of one (component, provider, model, unit)."""

    component: str
    provider: str
    model: str  # ANY_MODEL matches every model of the provider without its own price
    unit: str
    usd: Decimal
    per: int = 1

    def __post_init__(self) -> None:
        if self.component not in COMPONENTS:
            raise InvalidArgument(
                f"price component must be one of {sorted(COMPONENTS)}, not {self.component!r}"
            )
        if self.unit not in UNITS:
            raise InvalidArgument(f"price unit must be one of {sorted(UNITS)}, not {self.unit!r}")
        if not self.provider:
            raise InvalidArgument("a price needs a provider")
        if self.usd < 0 or self.per < 1:
            raise InvalidArgument(f"price for {self.provider}/{self.model}: usd must be >= 0 and per >= 1")

    @property
    def key(self) -> tuple[str, str, str, str]:
        """What the price applies to."""
        return (self.component, self.provider, self.model, self.unit)

    def cost_micros(self, quantity_milli: int) -> int:
        """The cost of ``quantity_milli`` thousandths of a unit, rounded half-even to a micro-dollar."""
        exact = Decimal(quantity_milli) / _MILLI * self.usd / Decimal(self.per) * _MICROS
        return int(exact.quantize(Decimal(1), rounding=ROUND_HALF_EVEN))


def _p(component: str, provider: str, model: str, unit: str, usd: str, per: int = 1) -> Price:
    return Price(component, provider, model, unit, Decimal(usd), per)


def _openai(model: str, inp: str, cached: str, out: str) -> list[Price]:
    m = 1_000_000
    return [
        _p("llm", "openai", model, "input_token", inp, m),
        _p("llm", "openai", model, "cached_input_token", cached, m),
        _p("llm", "openai", model, "output_token", out, m),
    ]


DEFAULT_VERSION = "2026-12-list-v1"
DEFAULT_PRICES: tuple[Price, ...] = (
    # Deepgram Nova-3 streaming, per minute of audio sent (metered here in seconds).
    _p("stt", "deepgram", "nova-3", "second", "0.0077", 60),
    _p("stt", "deepgram", ANY_MODEL, "second", "0.0077", 60),
    # Deepgram Aura-2 and ElevenLabs, per 1k characters.
    _p("tts", "deepgram", "aura-2", "character", "0.030", 1000),
    _p("tts", "deepgram", ANY_MODEL, "character", "0.030", 1000),
    _p("tts", "elevenlabs", ANY_MODEL, "character", "0.10", 1000),
    # OpenAI per 1M input / cached input / output tokens.
    *_openai("gpt-4o-mini", "0.15", "0.075", "0.60"),
    *_openai("gpt-4o", "2.50", "1.25", "10.00"),
    *_openai("gpt-4.1-mini", "0.40", "0.10", "1.60"),
    *_openai("gpt-4.1-nano", "0.10", "0.025", "0.40"),
    *_openai("gpt-4.1", "2.00", "0.50", "8.00"),
    # Telephony (SIP trunk minutes), inbound and outbound.
    _p("telephony", "sip_inbound", ANY_MODEL, "minute", "0.0085"),
    _p("telephony", "sip_outbound", ANY_MODEL, "minute", "0.014"),
    # Local engines and the platform's own call-time line: zero-cost, but priced (not unknown).
    _p("stt", "whisper-local", ANY_MODEL, "second", "0"),
    _p("tts", "piper", ANY_MODEL, "character", "0"),
    _p("tts", "local", ANY_MODEL, "character", "0"),  # tts_svc's in-process link
    # TTS audio seconds are recorded but billed by character: zero-priced, not unknown.
    *(_p("tts", p, ANY_MODEL, "second", "0") for p in ("deepgram", "elevenlabs", "piper", "local")),
    _p("llm", "offline-responder", ANY_MODEL, "input_token", "0"),
    _p("llm", "offline-responder", ANY_MODEL, "cached_input_token", "0"),
    _p("llm", "offline-responder", ANY_MODEL, "output_token", "0"),
    _p("call", "voiceai", ANY_MODEL, "second", "0"),
)


class PriceBook:
    """One version of the prices; ``price_lines`` prices usage lines against it."""

    def __init__(self, version: str, prices: Iterable[Price], under: PriceBook | None = None) -> None:
        if not version:
            raise InvalidArgument("a price book needs a version")
        self.version = version
        self._prices = {p.key: p for p in prices}
        # A layer (a tenant's contract) is consulted whole before the book under it.
        self._under = under

    def __len__(self) -> int:
        return len(self._prices)

    def lookup(self, component: str, provider: str, model: str, unit: str) -> Price | None:
        """The model's own price, else the provider's any-model price, else None."""
        found = self._prices.get((component, provider, model, unit))
        if found is None and _DATED.search(model):  # "gpt-4o-mini-2024-07-18" is gpt-4o-mini's
            found = self._prices.get((component, provider, _DATED.sub("", model), unit))
        if found is None:
            found = self._prices.get((component, provider, ANY_MODEL, unit))
        if found is None and self._under is not None:
            return self._under.lookup(component, provider, model, unit)
        return found

    def with_prices(self, version: str, prices: Iterable[Price]) -> PriceBook:
        """A new book: these prices over this book's (same key = replaced)."""
        return PriceBook(version, [*self._prices.values(), *prices])

    def cost_of(self, line: usage_pb2.UsageLine) -> int | None:
        """The line's cost in micro-dollars, None without a price; changes and counts nothing
        (for estimates such as a call's running total against its spend cap)."""
        price = self.lookup(line.component, line.provider, line.model, line.unit)
        return price.cost_micros(line.quantity_milli) if price is not None else None

    def price_line(self, line: usage_pb2.UsageLine) -> None:
        """Sets the line's cost, version and unpriced marker in place."""
        price = self.lookup(line.component, line.provider, line.model, line.unit)
        line.price_book_version = self.version
        if price is None:
            line.cost_micros = 0
            line.unpriced = True
            UNPRICED_LINES.labels(line.component, line.provider, line.unit).inc()
        else:
            line.cost_micros = price.cost_micros(line.quantity_milli)
            line.unpriced = False

    def price_usage(self, usage: usage_pb2.Usage) -> None:
        """Prices every line of ``usage`` and sets its total, version and unpriced marker."""
        total = 0
        unpriced = False
        for line in usage.lines:
            self.price_line(line)
            total += line.cost_micros
            unpriced = unpriced or line.unpriced
        usage.cost_micros = total
        usage.price_book_version = self.version
        usage.unpriced = unpriced


DEFAULT_BOOK = PriceBook(DEFAULT_VERSION, DEFAULT_PRICES)


def price_from_dict(raw: Mapping[str, object]) -> Price:
    """One price from JSON: component, provider, model (default "*"), unit, usd (a string), per."""
    try:
        usd = Decimal(str(raw["usd"]))
        per = int(str(raw.get("per", 1)))
        return Price(
            str(raw["component"]),
            str(raw["provider"]),
            str(raw.get("model", ANY_MODEL)),
            str(raw["unit"]),
            usd,
            per,
        )
    except KeyError as e:
        raise InvalidArgument(f"price entry lacks {e.args[0]!r}") from e
    except (InvalidOperation, ValueError) as e:
        raise InvalidArgument(f"price entry has a bad number: {raw!r}") from e


def load_book(path: Path, base: PriceBook = DEFAULT_BOOK) -> PriceBook:
    """An operator's book: ``{"version": "...", "replace": false, "prices": [...]}``.

    Without ``replace`` the file's prices override ``base``'s for the same key and keep the rest.
    """
    try:
        doc = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise InvalidArgument(f"price book {path}: cannot read it as JSON ({e})") from e
    if not isinstance(doc, dict) or not isinstance(doc.get("prices"), list):
        raise InvalidArgument(f"price book {path}: expected an object with 'version' and a 'prices' list")
    version = str(doc.get("version") or "")
    if not version:
        raise InvalidArgument(f"price book {path}: 'version' is required (each priced line names it)")
    prices = [price_from_dict(p) for p in doc["prices"]]
    return PriceBook(version, prices) if doc.get("replace") else base.with_prices(version, prices)


class PricingSettings(BaseSettings):
    """Where the operator's price book comes from (env prefix VOICEAI_)."""

    model_config = SettingsConfigDict(env_prefix="VOICEAI_", extra="ignore")

    # A JSON price book over (or, with "replace": true, instead of) the defaults.
    price_book_file: Path | None = Field(default=None)


def book_from_settings(settings: PricingSettings) -> PriceBook:
    """The book in force for this process."""
    if settings.price_book_file is None:
        return DEFAULT_BOOK
    return load_book(settings.price_book_file)


def contract_book(base: PriceBook, prices: Iterable[Price], revision: str) -> PriceBook:
    """A tenant's contract prices layered over ``base`` (a contract's any-model price beats the
    book's model prices for that provider); its version names both."""
    prices = list(prices)
    if not prices:
        return base
    return PriceBook(f"{base.version}+contract-{revision}", prices, under=base)


def line(
    component: str,
    provider: str,
    unit: str,
    quantity_milli: int,
    *,
    model: str = "",
    key_label: str = "",
    turn: int = 0,
) -> usage_pb2.UsageLine:
    """A usage line (unpriced until a book prices it)."""
    return usage_pb2.UsageLine(
        component=component,
        provider=provider,
        model=model,
        key_label=key_label,
        unit=unit,
        quantity_milli=quantity_milli,
        turn=turn,
    )


def repriced(line_: usage_pb2.UsageLine, book: PriceBook) -> usage_pb2.UsageLine:
    """A priced copy of ``line_``."""
    out = usage_pb2.UsageLine()
    out.CopyFrom(line_)
    book.price_line(out)
    return out


__all__ = [
    "ANY_MODEL",
    "DEFAULT_BOOK",
    "DEFAULT_PRICES",
    "DEFAULT_VERSION",
    "Price",
    "PriceBook",
    "PricingSettings",
    "book_from_settings",
    "contract_book",
    "line",
    "load_book",
    "price_from_dict",
    "repriced",
]
