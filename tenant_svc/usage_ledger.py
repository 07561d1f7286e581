"""The usage ledger: a call's priced usage lines and the tenant x day x agent x provider rollups.

``record_call_usage`` runs inside the transaction that writes the call record (the seam every
record-write path calls): it prices the call's lines with the book in force now (the tenant's
contract prices over the operator's book), replaces any lines the same call wrote before and
moves the rollups by the difference, so a retried or re-written record counts once.

Attribution rule (documented in docs/architecture.md "Usage ledger"): all of a call's usage
belongs to the UTC day, and so the UTC month, in which the call *ended*; a call across
midnight or a month end is not split. The end time is the gateway's; one more than
``MAX_FUTURE_SKEW`` ahead of this server's clock is taken as skew and replaced by the server's
time, and a record without an end time is attributed to the time it is written.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg
from psycopg.rows import dict_row

from common.gen.voiceai.common.v1 import usage_pb2
from common.gen.voiceai.tenant.v1 import resources_pb2 as pb
from common.pricing import Price, PriceBook, contract_book, line

MAX_FUTURE_SKEW = timedelta(minutes=5)
_RollupKey = tuple[date, str, str, str, str, str]  # day, agent, component, provider, model, unit


@dataclass(slots=True)
class _Delta:
    quantity_milli: int = 0
    cost_micros: int = 0
    lines: int = 0
    unpriced_lines: int = 0


def attribution_day(end_time: datetime | None, now: datetime) -> date:
    """The UTC day a call's usage is attributed to (see the module docstring)."""
    if end_time is None or end_time - now > MAX_FUTURE_SKEW:
        end_time = now
    return end_time.astimezone(UTC).date()


def derived_lines(call: pb.Call) -> list[usage_pb2.UsageLine]:
    """Lines the record itself implies, when the gateway did not send them: the call's own
    duration ("call" component, what minute quotas count) and, for a phone call, telephony
    minutes (whole minutes started, as SIP trunks bill them)."""
    have = {ln.component for ln in call.usage.lines}
    out: list[usage_pb2.UsageLine] = []
    seconds = 0.0
    if call.HasField("start_time") and call.HasField("end_time"):
        seconds = max(0.0, (call.end_time.ToDatetime() - call.start_time.ToDatetime()).total_seconds())
    # Totals without lines (an older gateway): recorded, but unpriced, never a wrong zero.
    u = call.usage
    legacy = (
        ("stt", "second", round(u.stt_seconds * 1000)),
        ("llm", "input_token", u.llm_prompt_tokens * 1000),
        ("llm", "output_token", u.llm_completion_tokens * 1000),
        ("tts", "character", u.tts_characters * 1000),
    )
    out.extend(line(c, "unattributed", unit, q) for c, unit, q in legacy if q > 0 and c not in have)
    if "call" not in have:
        out.append(line("call", "voiceai", "second", round(seconds * 1000)))
    phone = bool(call.from_number or call.to_number)
    if phone and "telephony" not in have and seconds > 0:
        provider = "sip_outbound" if call.direction == pb.CALL_DIRECTION_OUTBOUND else "sip_inbound"
        out.append(line("telephony", provider, "minute", math.ceil(seconds / 60) * 1000))
    return out


async def contract_prices(conn: psycopg.AsyncConnection[Any]) -> tuple[list[Price], datetime | None]:
    """The bound tenant's contract prices and when they last changed."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            b"SELECT component, provider, model, unit, usd, per, update_time FROM contract_prices"
            b" ORDER BY component, provider, model, unit"
        )
        rows = await cur.fetchall()
    prices = [
        Price(r["component"], r["provider"], r["model"], r["unit"], Decimal(r["usd"]), r["per"]) for r in rows
    ]
    return prices, max((r["update_time"] for r in rows), default=None)


async def replace_contract_prices(
    conn: psycopg.AsyncConnection[Any], tenant_id: str, prices: Sequence[Price]
) -> None:
    """The bound tenant's whole contract becomes ``prices``."""
    await conn.execute(b"DELETE FROM contract_prices")
    async with conn.cursor() as cur:
        await cur.executemany(
            b"INSERT INTO contract_prices (tenant_id, component, provider, model, unit, usd, per)"
            b" VALUES (%s, %s, %s, %s, %s, %s, %s)",
            [(tenant_id, p.component, p.provider, p.model, p.unit, p.usd, p.per) for p in prices],
        )


async def book_for_tenant(conn: psycopg.AsyncConnection[Any], base: PriceBook) -> PriceBook:
    """The operator's book with the bound tenant's contract prices over it."""
    prices, changed = await contract_prices(conn)
    return contract_book(base, prices, changed.strftime("%Y%m%dT%H%M%S") if changed else "")


def _deltas(rows: Iterable[Any], sign: int, into: dict[_RollupKey, _Delta]) -> None:
    for r in rows:
        d = into.setdefault((r[0], r[1], r[2], r[3], r[4], r[5]), _Delta())
        d.quantity_milli += sign * r[6]
        d.cost_micros += sign * r[7]
        d.lines += sign
        d.unpriced_lines += sign * int(r[8])


async def record_call_usage(
    conn: psycopg.AsyncConnection[Any],
    tenant_id: str,
    call_id: str,
    agent_id: str,
    call: pb.Call,
    book: PriceBook,
    now: datetime | None = None,
) -> None:
    """Prices ``call.usage`` in place and writes it to the ledger, replacing this call's earlier
    lines (idempotent per call id). Call inside the call record's transaction, tenant bound."""
    now = now or datetime.now(UTC)
    call.usage.lines.extend(derived_lines(call))
    (await book_for_tenant(conn, book)).price_usage(call.usage)
    day = attribution_day(call.end_time.ToDatetime(UTC) if call.HasField("end_time") else None, now)
    # One writer per call at a time: a concurrent re-write waits, then sees the lines we wrote.
    await conn.execute(
        b"SELECT pg_advisory_xact_lock(hashtextextended(%s, 17))", (f"usage:{tenant_id}:{call_id}",)
    )
    deltas: dict[_RollupKey, _Delta] = {}
    cur = await conn.execute(
        b"DELETE FROM usage_lines WHERE call_id = %s"
        b" RETURNING day, agent_id, component, provider, model, unit, quantity_milli, cost_micros, unpriced",
        (call_id,),
    )
    _deltas(await cur.fetchall(), -1, deltas)
    new = [
        (
            day,
            agent_id,
            ln.component,
            ln.provider,
            ln.model,
            ln.unit,
            ln.quantity_milli,
            ln.cost_micros,
            ln.unpriced,
        )
        for ln in call.usage.lines
    ]
    _deltas(new, +1, deltas)
    async with conn.cursor() as c:
        await c.executemany(
            b"INSERT INTO usage_lines (tenant_id, call_id, line_no, day, agent_id, turn, component,"
            b" provider, model, key_label, unit, quantity_milli, cost_micros, unpriced, price_book_version)"
            b" VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            [
                (
                    tenant_id, call_id, i, day, agent_id, ln.turn, ln.component, ln.provider, ln.model,
                    ln.key_label, ln.unit, ln.quantity_milli, ln.cost_micros, ln.unpriced,
                    ln.price_book_version,
                )
                for i, ln in enumerate(call.usage.lines)
            ],
        )  # fmt: skip
        changed = [(k, d) for k, d in sorted(deltas.items()) if d.lines or d.quantity_milli or d.cost_micros]
        if changed:
            await c.executemany(
                b"INSERT INTO usage_rollups AS r (tenant_id, day, agent_id, component, provider, model, unit,"
                b" quantity_milli, cost_micros, lines, unpriced_lines)"
                b" VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
                b" ON CONFLICT (tenant_id, day, agent_id, component, provider, model, unit) DO UPDATE SET"
                b" quantity_milli = r.quantity_milli + EXCLUDED.quantity_milli,"
                b" cost_micros = r.cost_micros + EXCLUDED.cost_micros,"
                b" lines = r.lines + EXCLUDED.lines,"
                b" unpriced_lines = r.unpriced_lines + EXCLUDED.unpriced_lines",
                [
                    (tenant_id, *k, d.quantity_milli, d.cost_micros, d.lines, d.unpriced_lines)
                    for k, d in changed
                ],
            )
            await c.execute(b"DELETE FROM usage_rollups WHERE lines = 0")


# -- reading ------------------------------------------------------------------------------
GROUP_COLUMNS = {
    "agent": ("agent_id",),
    "component": ("component",),
    "provider": ("component", "provider"),
    "model": ("component", "provider", "model", "unit"),
    "day": ("day",),
    "month": ("date_trunc('month', day)::date",),
}


def _group_exprs(group_by: Sequence[str]) -> list[str]:
    exprs: list[str] = []
    for g in group_by:
        for e in GROUP_COLUMNS[g]:
            if e not in exprs:
                exprs.append(e)
    return exprs


_OUT = {
    "agent_id": "agent_id",
    "component": "component",
    "provider": "provider",
    "model": "model",
    "unit": "unit",
    "day": "period_start",
    "date_trunc('month', day)::date": "period_start",
}


async def usage_rows(
    conn: psycopg.AsyncConnection[Any],
    start: date,
    end: date,
    group_by: Sequence[str],
    offset: int = 0,
    limit: int = 1000,
) -> list[dict[str, Any]]:
    """Rollups in [start, end) grouped by ``group_by`` (keys of GROUP_COLUMNS), ordered by group.

    Each row has the group's columns (as ``agent_id``, ``component``, ``provider``, ``model``,
    ``unit``, ``period_start``) and ``quantity_milli`` (0 when units are mixed), ``unit`` (''
    when mixed), ``cost_micros``, ``lines``, ``unpriced_lines``."""
    exprs = _group_exprs(group_by)
    select = [f"{e} AS {_OUT[e]}" for e in exprs]
    if "unit" not in exprs:
        select.append("CASE WHEN count(DISTINCT unit) = 1 THEN min(unit) ELSE '' END AS unit")
    query = (
        f"SELECT {', '.join(select)},"
        " CASE WHEN count(DISTINCT unit) = 1 THEN sum(quantity_milli) ELSE 0 END::bigint AS quantity_milli,"
        " sum(cost_micros)::bigint AS cost_micros, sum(lines)::bigint AS lines,"
        " sum(unpriced_lines)::bigint AS unpriced_lines"
        " FROM usage_rollups WHERE day >= %s AND day < %s"
        + (f" GROUP BY {', '.join(exprs)} ORDER BY {', '.join(exprs)}" if exprs else "")
        + " OFFSET %s LIMIT %s"
    )
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query.encode(), (start, end, offset, limit))
        rows = await cur.fetchall()
    return [r for r in rows if r["lines"]]


async def usage_totals(conn: psycopg.AsyncConnection[Any], start: date, end: date) -> dict[str, int]:
    """calls, call_milliseconds, cost_micros and unpriced_lines in [start, end)."""
    cur = await conn.execute(
        b"SELECT coalesce(sum(lines) FILTER (WHERE component = 'call'), 0)::bigint,"
        b" coalesce(sum(quantity_milli) FILTER (WHERE component = 'call'), 0)::bigint,"
        b" coalesce(sum(cost_micros), 0)::bigint, coalesce(sum(unpriced_lines), 0)::bigint"
        b" FROM usage_rollups WHERE day >= %s AND day < %s",
        (start, end),
    )
    row = await cur.fetchone()
    assert row is not None
    return {"calls": row[0], "call_milliseconds": row[1], "cost_micros": row[2], "unpriced_lines": row[3]}


__all__ = [
    "GROUP_COLUMNS",
    "MAX_FUTURE_SKEW",
    "attribution_day",
    "book_for_tenant",
    "contract_prices",
    "replace_contract_prices",
    "derived_lines",
    "record_call_usage",
    "usage_rows",
    "usage_totals",
]
