"""The usage ledger over real tenant_svc, PostgreSQL and gRPC: priced call records, rollups that
equal the records, idempotent writes, day attribution, the usage RPCs and ListCalls filters."""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import grpc.aio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg_pool import AsyncConnectionPool

from common.gen.voiceai.common.v1 import usage_pb2
from common.gen.voiceai.tenant.v1 import resources_pb2 as pb
from common.gen.voiceai.tenant.v1 import tenant_service_pb2 as svc
from common.gen.voiceai.tenant.v1 import usage_service_pb2 as us
from common.gen.voiceai.tenant.v1 import usage_service_pb2_grpc as us_grpc
from common.pricing import DEFAULT_BOOK, line
from gateway.session.reply import chat_request
from gateway.tenancy import agent_from_tenant
from tenant_svc import usage_ledger
from tenant_svc.db.database import DatabaseSettings
from tenant_svc.repository import Repository
from tests.integration.tenant_harness import TenantApi, tenant_api

NOON = datetime(2026, 11, 14, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
async def api(
    database_settings: DatabaseSettings, tmp_path_factory: pytest.TempPathFactory, redis_url: str
) -> AsyncIterator[TenantApi]:
    async with tenant_api(database_settings, Path(tmp_path_factory.mktemp("dev-auth")), redis_url) as running:
        yield running


def usage_stub(api: TenantApi) -> us_grpc.UsageServiceStub:
    return us_grpc.UsageServiceStub(api.channel)


def a_call(
    agent: str, start: datetime, seconds: float, lines: list[usage_pb2.UsageLine], **fields: object
) -> pb.Call:
    call = pb.Call(agent=agent, status=pb.CALL_STATUS_COMPLETED, usage=usage_pb2.Usage(lines=lines), **fields)  # type: ignore[arg-type]
    call.start_time.FromDatetime(start)
    call.end_time.FromDatetime(start + timedelta(seconds=seconds))
    return call


async def record(api: TenantApi, t: str, call_id: str, call: pb.Call) -> pb.Call:
    return await api.stub.CreateCall(
        svc.CreateCallRequest(parent=f"tenants/{t}", call=call, call_id=call_id), metadata=api.md(t, "agent")
    )


def window(start: datetime, days: int = 1) -> dict[str, object]:
    req = us.GetUsageRequest()
    req.start_time.FromDatetime(start)
    req.end_time.FromDatetime(start + timedelta(days=days))
    return {"start_time": req.start_time, "end_time": req.end_time}


async def test_mid_call_tts_fallback_is_priced_per_provider(api: TenantApi) -> None:
    t = await api.new_tenant()
    agent = (await api.new_agent(t, "desk")).name
    # Turn 1 on Aura-2; Aura-2's socket went silent in turn 2, ElevenLabs took over the rest.
    lines = [
        line("stt", "deepgram", "second", 120_000, model="nova-3", key_label="tenant"),
        line("llm", "openai", "input_token", 1_800_000, model="gpt-4o-mini", turn=1),
        line("llm", "openai", "output_token", 60_000, model="gpt-4o-mini", turn=1),
        line("tts", "deepgram", "character", 140_000, model="aura-2", turn=1),
        line("tts", "deepgram", "character", 35_000, model="aura-2", turn=2),
        line("tts", "elevenlabs", "character", 90_000, model="eleven_flash_v2_5", turn=2),
    ]
    stored = await record(api, t, "fallback", a_call(agent, NOON, 120, lines))
    by = {(ln.provider, ln.turn): ln for ln in stored.usage.lines if ln.component == "tts"}
    assert by["deepgram", 1].cost_micros == 4_200  # 140 chars x $0.030/1k
    assert by["deepgram", 2].cost_micros == 1_050
    assert by["elevenlabs", 2].cost_micros == 9_000  # 90 chars x $0.10/1k
    stt = next(ln for ln in stored.usage.lines if ln.component == "stt")
    assert stt.cost_micros == 15_400 and stt.key_label == "tenant"  # 2 min x $0.0077
    assert not stored.usage.unpriced and stored.usage.price_book_version == DEFAULT_BOOK.version
    assert stored.usage.cost_micros == sum(ln.cost_micros for ln in stored.usage.lines) > 0
    # The record as stored says the same.
    got = await api.stub.GetCall(
        svc.GetCallRequest(name=f"tenants/{t}/calls/fallback"), metadata=api.md(t, "viewer")
    )
    assert got.usage == stored.usage
    usage = await usage_stub(api).GetUsage(
        us.GetUsageRequest(parent=f"tenants/{t}", group_by=[us.USAGE_GROUP_BY_PROVIDER], **window(NOON)),  # type: ignore[arg-type]
        metadata=api.md(t, "admin"),
    )
    tts = {r.provider: r for r in usage.rows if r.component == "tts"}
    assert tts["deepgram"].cost_micros == 5_250 and tts["deepgram"].quantity_milli == 175_000
    assert tts["elevenlabs"].cost_micros == 9_000 and tts["elevenlabs"].unit == "character"
    assert usage.calls == 1 and usage.call_seconds == 120.0
    assert usage.cost_micros == stored.usage.cost_micros and usage.unpriced_lines == 0


async def test_a_retried_record_counts_once_and_an_unknown_model_is_unpriced(api: TenantApi) -> None:
    t = await api.new_tenant()
    agent = (await api.new_agent(t)).name
    call = a_call(agent, NOON, 30, [line("llm", "openai", "input_token", 9_000_000, model="gpt-unknown")])
    stored = await record(api, t, "once", call)
    assert stored.usage.unpriced and stored.usage.lines[0].unpriced and stored.usage.lines[0].cost_micros == 0
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await record(api, t, "once", call)
    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS
    usage = await usage_stub(api).GetUsage(
        us.GetUsageRequest(parent=f"tenants/{t}", **window(NOON)),  # type: ignore[arg-type]
        metadata=api.md(t, "viewer"),
    )
    assert (usage.calls, usage.unpriced_lines, usage.cost_micros) == (1, 1, 0)


async def test_rewriting_a_calls_usage_replaces_it_in_the_rollups(
    api: TenantApi, pg_pool: AsyncConnectionPool
) -> None:
    """The seam #15's upserting record path calls: a second write of the same call replaces."""
    t = await api.new_tenant()
    repo = Repository(pg_pool)
    first = a_call("", NOON, 60, [line("tts", "elevenlabs", "character", 500_000)])
    second = a_call(
        "", NOON + timedelta(days=1), 60, [line("tts", "deepgram", "character", 200_000, model="aura-2")]
    )
    for call in (first, first, second, second):
        async with repo.tenant(t) as scope:
            await usage_ledger.record_call_usage(scope._conn, t, "again", "", call, DEFAULT_BOOK)
    usage = await usage_stub(api).GetUsage(
        us.GetUsageRequest(
            parent=f"tenants/{t}",
            group_by=[us.USAGE_GROUP_BY_DAY, us.USAGE_GROUP_BY_PROVIDER],
            **window(NOON, 3),
        ),  # type: ignore[arg-type]
        metadata=api.md(t, "viewer"),
    )
    # Only the last write remains, on its own day; the first day's rows are gone, not zeroed.
    tts = [
        (r.period_start, r.provider, r.quantity_milli, r.cost_micros)
        for r in usage.rows
        if r.component == "tts"
    ]
    assert tts == [("2026-11-15", "deepgram", 200_000, 6_000)]
    assert usage.calls == 1


def test_attribution_rule_end_day_and_skew() -> None:
    now = datetime(2026, 12, 1, 0, 2, tzinfo=UTC)
    spans_midnight = datetime(2026, 11, 30, 23, 59, 59, tzinfo=UTC) + timedelta(seconds=90)
    assert usage_ledger.attribution_day(spans_midnight, now).isoformat() == "2026-12-01"  # the end's day
    late = datetime(2026, 11, 30, 23, 59, tzinfo=UTC)
    assert usage_ledger.attribution_day(late, now).isoformat() == "2026-11-30"  # an old end keeps its day
    ahead = now + timedelta(minutes=30)  # a gateway clock far ahead: the server's time instead
    assert usage_ledger.attribution_day(ahead, now) == now.date()
    slight = datetime(2026, 12, 1, 0, 5, tzinfo=UTC)  # within the skew allowance: kept
    assert usage_ledger.attribution_day(slight, now).isoformat() == "2026-12-01"
    assert usage_ledger.attribution_day(None, now) == now.date()


PROVIDERS = [
    ("stt", "deepgram", "nova-3", "second"),
    ("stt", "whisper-local", "base.en", "second"),
    ("llm", "openai", "gpt-4o-mini", "input_token"),
    ("llm", "openai", "gpt-4o-mini", "cached_input_token"),
    ("llm", "openai", "gpt-4o", "output_token"),
    ("llm", "openai", "gpt-unpriced", "output_token"),
    ("tts", "deepgram", "aura-2", "character"),
    ("tts", "elevenlabs", "eleven_flash_v2_5", "character"),
    ("tts", "piper", "joe", "character"),
]
a_line = st.builds(
    lambda p, q, turn: line(p[0], p[1], p[3], q, model=p[2], turn=turn),
    st.sampled_from(PROVIDERS),
    st.integers(0, 5_000_000),
    st.integers(0, 20),
)
a_random_call = st.tuples(
    st.sampled_from(["a1", "a2", ""]),
    st.integers(0, 3 * 24 * 3600),  # start offset: several days, some across midnight
    st.integers(0, 3600),  # duration
    st.lists(a_line, max_size=8),
    st.booleans(),  # a phone call (telephony minutes)
)


def row_key(r: us.UsageRow) -> tuple[str, str, str, str, str, str]:
    """(day, agent id, component, provider, model, unit) of a ledger row."""
    return (
        r.period_start,
        r.agent.rsplit("/", 1)[-1] if r.agent else "",
        r.component,
        r.provider,
        r.model,
        r.unit,
    )


@settings(max_examples=5, deadline=None, suppress_health_check=list(HealthCheck))
@given(calls=st.lists(a_random_call, min_size=50, max_size=50))
async def test_rollups_equal_the_sum_of_the_call_records(api: TenantApi, calls: list[tuple]) -> None:  # type: ignore[type-arg]
    t = await api.new_tenant(pb.PLAN_TIER_ENTERPRISE)
    for aid in ("a1", "a2"):
        await api.new_agent(t, aid)
    base = datetime(2026, 10, 30, 6, 0, tzinfo=UTC)
    expected: Counter[tuple[str, str, str, str, str, str]] = Counter()
    cost: Counter[tuple[str, str, str, str, str, str]] = Counter()
    for i, (aid, offset, seconds, lines, phone) in enumerate(calls):
        agent = f"tenants/{t}/agents/{aid}" if aid else ""
        extra = {"from_number": "+14155550100"} if phone else {}
        stored = await record(
            api, t, f"c{i}", a_call(agent, base + timedelta(seconds=offset), seconds, lines, **extra)
        )
        day = stored.end_time.ToDatetime(UTC).date().isoformat()
        assert stored.usage.cost_micros == sum(ln.cost_micros for ln in stored.usage.lines)
        for ln in stored.usage.lines:
            key = (day, aid, ln.component, ln.provider, ln.model, ln.unit)
            expected[key] += ln.quantity_milli
            cost[key] += ln.cost_micros
    rows: list[us.UsageRow] = []
    token = ""
    while True:
        page = await usage_stub(api).ListUsage(
            us.ListUsageRequest(
                parent=f"tenants/{t}",
                group_by=[us.USAGE_GROUP_BY_DAY, us.USAGE_GROUP_BY_AGENT, us.USAGE_GROUP_BY_MODEL],
                page_size=40,
                page_token=token,
                **window(base, 6),  # type: ignore[arg-type]
            ),
            metadata=api.md(t, "viewer"),
        )
        rows.extend(page.rows)
        token = page.next_page_token
        if not token:
            break
    got_q = {row_key(r): r.quantity_milli for r in rows}
    got_c = {row_key(r): r.cost_micros for r in rows}
    assert got_q == dict(expected)
    assert got_c == dict(cost)
    totals = await usage_stub(api).GetUsage(
        us.GetUsageRequest(parent=f"tenants/{t}", **window(base, 6)),  # type: ignore[arg-type]
        metadata=api.md(t, "viewer"),
    )
    assert totals.calls == 50 and totals.cost_micros == sum(cost.values())


async def test_month_grouping_export_and_bad_input(api: TenantApi) -> None:
    t = await api.new_tenant()
    agent = (await api.new_agent(t, "desk")).name
    nov = datetime(2026, 11, 30, 23, 59, tzinfo=UTC)  # ends on 1 December: December's
    await record(api, t, "m1", a_call(agent, nov, 120, [line("tts", "piper", "character", 1_000)]))
    await record(
        api, t, "m2", a_call(agent, NOON, 60, [line("stt", "deepgram", "second", 60_000, model="nova-3")])
    )
    stub = usage_stub(api)
    w = window(datetime(2026, 11, 1, tzinfo=UTC), 60)
    got = await stub.GetUsage(
        us.GetUsageRequest(parent=f"tenants/{t}", group_by=[us.USAGE_GROUP_BY_MONTH], **w),  # type: ignore[arg-type]
        metadata=api.md(t, "viewer"),
    )
    assert [(r.period_start, r.cost_micros) for r in got.rows] == [("2026-11-01", 7_700), ("2026-12-01", 0)]
    exported = await stub.ExportUsage(
        us.ExportUsageRequest(
            parent=f"tenants/{t}", group_by=[us.USAGE_GROUP_BY_AGENT, us.USAGE_GROUP_BY_PROVIDER], **w
        ),  # type: ignore[arg-type]
        metadata=api.md(t, "viewer"),
    )
    table = list(csv.DictReader(io.StringIO(exported.data.decode())))
    assert exported.content_type == "text/csv"
    assert {(r["agent"], r["component"], r["provider"], r["cost_micros"]) for r in table} == {
        (agent, "call", "voiceai", "0"),
        (agent, "stt", "deepgram", "7700"),
        (agent, "tts", "piper", "0"),
    }
    jsonl = await stub.ExportUsage(
        us.ExportUsageRequest(parent=f"tenants/{t}", format=us.USAGE_EXPORT_FORMAT_JSONL, **w),  # type: ignore[arg-type]
        metadata=api.md(t, "viewer"),
    )
    assert sum(json.loads(x)["cost_micros"] for x in jsonl.data.decode().splitlines()) == 7_700
    bad = [
        (us.GetUsageRequest(parent=f"tenants/{t}", group_by=[0]), "group_by value 0"),
        (
            us.GetUsageRequest(
                parent=f"tenants/{t}", group_by=[us.USAGE_GROUP_BY_DAY, us.USAGE_GROUP_BY_MONTH]
            ),
            "day or month",
        ),
        (us.GetUsageRequest(parent=f"tenants/{t}", **window(NOON, -2)), "end_time must be after"),  # type: ignore[arg-type]
    ]
    for request, message in bad:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.GetUsage(request, metadata=api.md(t, "viewer"))
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT and message in (
            caught.value.details() or ""
        )


async def test_list_calls_filters_and_order(api: TenantApi) -> None:
    t = await api.new_tenant()
    a1 = (await api.new_agent(t, "a1")).name
    a2 = (await api.new_agent(t, "a2")).name
    for i in range(6):
        call = a_call(a1 if i % 2 else a2, NOON + timedelta(hours=i), 30, [])
        if i == 5:
            call.status = pb.CALL_STATUS_FAILED
        await record(api, t, f"k{i}", call)
    md = api.md(t, "viewer")
    newest_first = await api.stub.ListCalls(
        svc.ListCallsRequest(parent=f"tenants/{t}", agent=a1), metadata=md
    )
    assert [c.name.rsplit("/", 1)[1] for c in newest_first.calls] == ["k5", "k3", "k1"]
    seen: list[str] = []
    token = ""
    while True:
        req = svc.ListCallsRequest(
            parent=f"tenants/{t}", order_by="start_time asc", page_size=2, page_token=token
        )
        req.start_time.FromDatetime(NOON + timedelta(hours=1))
        req.end_time.FromDatetime(NOON + timedelta(hours=5))
        page = await api.stub.ListCalls(req, metadata=md)
        seen += [c.name.rsplit("/", 1)[1] for c in page.calls]
        token = page.next_page_token
        if not token:
            break
    assert seen == ["k1", "k2", "k3", "k4"]
    failed = await api.stub.ListCalls(
        svc.ListCallsRequest(parent=f"tenants/{t}", status=pb.CALL_STATUS_FAILED), metadata=md
    )
    assert [c.name.rsplit("/", 1)[1] for c in failed.calls] == ["k5"]
    for request, message in [
        (svc.ListCallsRequest(parent=f"tenants/{t}", order_by="cost desc"), "order_by must be"),
        (svc.ListCallsRequest(parent=f"tenants/{t}", agent="tenants/other/agents/a1"), "same tenant"),
        (svc.ListCallsRequest(parent=f"tenants/{t}", status=99), "not a CallStatus"),  # type: ignore[arg-type]
    ]:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await api.stub.ListCalls(request, metadata=md)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT and message in (
            caught.value.details() or ""
        )


async def test_contract_prices_are_set_by_operators_and_price_later_calls(api: TenantApi) -> None:
    t = await api.new_tenant()
    agent = (await api.new_agent(t)).name
    stub = usage_stub(api)
    deal = us.UpdateContractPricesRequest(
        parent=f"tenants/{t}",
        prices=[
            us.ContractPrice(component="tts", provider="elevenlabs", unit="character", usd="0.05", per=1000)
        ],
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:  # the tenant's own admin may not
        await stub.UpdateContractPrices(deal, metadata=api.md(t, "admin"))
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    before = await record(
        api, t, "before", a_call(agent, NOON, 10, [line("tts", "elevenlabs", "character", 1_000_000)])
    )
    stored = await stub.UpdateContractPrices(deal, metadata=api.md(None, "platform", header_tenant=t))
    assert [(p.provider, p.model, p.usd, p.per) for p in stored.prices] == [
        ("elevenlabs", "*", "0.0500000000", 1000)
    ]
    seen = await stub.GetContractPrices(
        us.GetContractPricesRequest(parent=f"tenants/{t}"), metadata=api.md(t, "viewer")
    )
    assert seen == stored and seen.HasField("update_time")
    after = await record(
        api, t, "after", a_call(agent, NOON, 10, [line("tts", "elevenlabs", "character", 1_000_000)])
    )
    assert before.usage.cost_micros == 100_000 and before.usage.price_book_version == DEFAULT_BOOK.version
    assert after.usage.cost_micros == 50_000 and "+contract-" in after.usage.price_book_version
    # History is not re-priced: the earlier call keeps its price.
    got = await api.stub.GetCall(
        svc.GetCallRequest(name=f"tenants/{t}/calls/before"), metadata=api.md(t, "viewer")
    )
    assert got.usage.cost_micros == 100_000
    bad = us.UpdateContractPricesRequest(
        parent=f"tenants/{t}",
        prices=[us.ContractPrice(component="tts", provider="x", unit="character", usd="-1")],
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.UpdateContractPrices(bad, metadata=api.md(None, "platform", header_tenant=t))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "prices[0]" in (caught.value.details() or "")


async def test_agent_llm_limits_round_trip_validate_and_reach_the_llm_request(api: TenantApi) -> None:
    t = await api.new_tenant()
    created = await api.stub.CreateAgent(
        svc.CreateAgentRequest(
            parent=f"tenants/{t}",
            agent=pb.Agent(system_prompt="Be brief.", max_tokens=120, context_token_budget=4000),
            agent_id="budgeted",
        ),
        metadata=api.md(t, "admin"),
    )
    assert (created.max_tokens, created.context_token_budget) == (120, 4000)
    request = chat_request(agent_from_tenant(created, "budgeted"), [])
    assert (request.max_tokens, request.context_token_budget) == (120, 4000)
    for agent, message in [
        (pb.Agent(system_prompt="x", context_token_budget=10), "context_token_budget"),
        (pb.Agent(system_prompt="x", max_tokens=100_000), "max_tokens"),
    ]:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await api.stub.CreateAgent(
                svc.CreateAgentRequest(parent=f"tenants/{t}", agent=agent), metadata=api.md(t, "admin")
            )
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT and message in (
            caught.value.details() or ""
        )


async def test_ledger_tables_are_under_forced_rls_and_show_nothing_without_a_tenant(
    api: TenantApi, pg_pool: AsyncConnectionPool
) -> None:
    t = await api.new_tenant()
    await record(api, t, "rls", a_call("", NOON, 60, [line("tts", "piper", "character", 1_000)]))
    async with pg_pool.connection() as conn:
        cur = await conn.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = 'public' AND c.relkind = 'r' AND EXISTS (SELECT 1 FROM pg_attribute a"
            "   WHERE a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped)"
            " AND NOT (c.relrowsecurity AND c.relforcerowsecurity)"
        )
        assert await cur.fetchall() == []  # every table with a tenant_id, this included
        for table in ("usage_lines", "usage_rollups", "contract_prices"):
            cur = await conn.execute(f"SELECT count(*) FROM {table}")  # type: ignore[arg-type]
            assert await cur.fetchone() == (0,), table
        await conn.rollback()
