"""The price book: integer micro-dollars from Decimal prices, versions on every line, unpriced
lines marked (never a wrong zero), operator books from JSON, contract prices over the book."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from common.errors import InvalidArgument
from common.gen.voiceai.common.v1 import usage_pb2
from common.pricing import DEFAULT_BOOK, Price, contract_book, line, load_book


def unpriced_count(provider: str) -> float:
    value = REGISTRY.get_sample_value(
        "voiceai_usage_unpriced_lines_total",
        {"component": "llm", "provider": provider, "unit": "input_token"},
    )
    return value or 0.0


def test_seed_table_prices_in_micro_dollars() -> None:
    usage = usage_pb2.Usage(
        lines=[
            line("stt", "deepgram", "second", 60_000, model="nova-3"),  # one minute: $0.0077
            line("tts", "deepgram", "character", 1_000_000, model="aura-2"),  # 1k chars: $0.030
            line("tts", "elevenlabs", "character", 1_000_000, model="eleven_flash_v2_5"),  # $0.10
            line("llm", "openai", "input_token", 1_000_000_000, model="gpt-4o-mini"),  # 1M: $0.15
            line("llm", "openai", "cached_input_token", 1_000_000_000, model="gpt-4o-mini"),  # $0.075
            line("llm", "openai", "output_token", 1_000_000_000, model="gpt-4o-mini"),  # $0.60
            line("telephony", "sip_inbound", "minute", 3_000),  # 3 min: $0.0255
            line("stt", "whisper-local", "second", 90_000, model="base.en"),  # local: zero, but priced
        ]
    )
    DEFAULT_BOOK.price_usage(usage)
    assert [ln.cost_micros for ln in usage.lines] == [
        7_700,
        30_000,
        100_000,
        150_000,
        75_000,
        600_000,
        25_500,
        0,
    ]
    assert usage.cost_micros == sum(ln.cost_micros for ln in usage.lines) == 988_200
    assert not usage.unpriced and not any(ln.unpriced for ln in usage.lines)
    assert (
        {ln.price_book_version for ln in usage.lines} == {DEFAULT_BOOK.version} == {usage.price_book_version}
    )


def test_rounding_is_half_even_on_exact_decimals() -> None:
    price = Price("llm", "openai", "m", "output_token", Decimal("0.60"), 1_000_000)
    assert price.cost_micros(1000) == 1  # 1 token = 0.6 micro-dollars -> 1
    assert price.cost_micros(2500) == 2  # 2.5 tokens = 1.5 -> 2 (half-even)
    assert price.cost_micros(4166) == 2  # 4.166 tokens = 2.4996 -> 2


def test_a_missing_price_is_unpriced_and_counted_never_zero_cost() -> None:
    before = unpriced_count("openai")
    usage = usage_pb2.Usage(
        lines=[
            line("llm", "openai", "input_token", 5_000_000, model="gpt-9-imaginary"),
            line("stt", "deepgram", "second", 30_000, model="nova-3"),
        ]
    )
    DEFAULT_BOOK.price_usage(usage)
    missing, priced = usage.lines
    assert (
        missing.unpriced and missing.cost_micros == 0 and missing.price_book_version == DEFAULT_BOOK.version
    )
    assert not priced.unpriced and priced.cost_micros == 3_850
    assert usage.unpriced and usage.cost_micros == 3_850  # a lower bound, flagged as such
    assert unpriced_count("openai") == before + 1


def test_operator_book_overrides_and_needs_a_version(tmp_path: Path) -> None:
    path = tmp_path / "prices.json"
    path.write_text(
        json.dumps(
            {
                "version": "ops-2027-01",
                "prices": [
                    {
                        "component": "tts",
                        "provider": "deepgram",
                        "unit": "character",
                        "usd": "0.027",
                        "per": 1000,
                    }
                ],
            }
        )
    )
    book = load_book(path)
    assert book.version == "ops-2027-01"
    aura = book.lookup("tts", "deepgram", "aura-2", "character")
    other = book.lookup("tts", "deepgram", "aura-1", "character")
    assert aura is not None and aura.usd == Decimal("0.030")  # the model's own price still wins
    assert other is not None and other.usd == Decimal("0.027")  # the any-model price was replaced
    assert book.lookup("stt", "deepgram", "nova-3", "second") is not None  # the rest kept
    path.write_text(json.dumps({"version": "x", "replace": True, "prices": []}))
    assert len(load_book(path)) == 0
    path.write_text(json.dumps({"prices": []}))
    with pytest.raises(InvalidArgument, match="'version' is required"):
        load_book(path)
    path.write_text(
        json.dumps(
            {"version": "v", "prices": [{"component": "tts", "provider": "x", "unit": "parsec", "usd": "1"}]}
        )
    )
    with pytest.raises(InvalidArgument, match="unit must be one of"):
        load_book(path)
    path.write_text(
        json.dumps(
            {
                "version": "v",
                "prices": [{"component": "tts", "provider": "x", "unit": "character", "usd": "lots"}],
            }
        )
    )
    with pytest.raises(InvalidArgument, match="bad number"):
        load_book(path)


def test_contract_prices_layer_over_the_book_and_name_their_version() -> None:
    contract = [Price("stt", "deepgram", "*", "second", Decimal("0.0050"), 60)]
    book = contract_book(DEFAULT_BOOK, contract, "20270101T000000")
    assert book.version == f"{DEFAULT_BOOK.version}+contract-20270101T000000"
    priced = line("stt", "deepgram", "second", 60_000, model="nova-3")
    book.price_line(priced)
    # The contract's any-model price beats the book's own nova-3 price; the rest is the book's.
    assert priced.cost_micros == 5_000 and priced.price_book_version.endswith("+contract-20270101T000000")
    tts = line("tts", "deepgram", "character", 1_000_000, model="aura-2")
    book.price_line(tts)
    assert tts.cost_micros == 30_000
    assert contract_book(DEFAULT_BOOK, [], "r3") is DEFAULT_BOOK


def test_a_dated_model_snapshot_takes_its_models_price() -> None:
    dated = line("llm", "openai", "output_token", 1_000_000_000, model="gpt-4o-mini-2024-07-18")
    DEFAULT_BOOK.price_line(dated)
    assert not dated.unpriced and dated.cost_micros == 600_000
