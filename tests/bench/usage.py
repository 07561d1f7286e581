"""Usage and cost benchmark (issue 17). Numbers are printed, never asserted.

1. Cost per call-minute of the demo conversation (20 turns) at cloud list prices (Deepgram
   Nova-3, OpenAI gpt-4o-mini, Aura-2), with and without the VAD gate and the context budget:
   the real gate runs over the call's caller audio (tone words and silence on the call's
   timeline) and counts what a provider would be sent; prompts are counted with the real BPE
   vocabulary; the price book prices the lines.
2. Ledger write cost per call: ``TenantScope.insert_call`` (priced lines, ledger, rollups, the
   call row) in one transaction on embedded PostgreSQL, p50/p99.
3. GetUsage / ListUsage latency over gRPC for a tenant with 100 000 calls in the ledger.

    python -m tests.bench.usage [--calls 100000] [--writes 300]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import uvloop

from common.gen.voiceai.common.v1 import usage_pb2
from common.gen.voiceai.tenant.v1 import resources_pb2 as pb
from common.gen.voiceai.tenant.v1 import usage_service_pb2 as us
from common.gen.voiceai.tenant.v1 import usage_service_pb2_grpc as us_grpc
from common.pricing import DEFAULT_BOOK, line
from llm_svc.context_budget import MESSAGE_OVERHEAD, shared_counter
from stt_svc.vad_gate import GatedStream, GateSettings
from tenant_svc.db.database import DatabaseSettings, open_pool
from tenant_svc.repository import Repository
from tests.doubles.tone_words import speak
from tests.integration.tenant_harness import TenantApi, tenant_api

TURNS = 20
SYSTEM = (
    "You are the receptionist of Bright Smile Dental. Be brief and friendly. Offer appointments"
    " Monday to Friday, 9 am to 5 pm; cleanings take 45 minutes; ask for the caller's name and"
    " phone number before booking; never give medical advice."
)
USER = "Hi, I would like to book a cleaning for next week, ideally on a Tuesday or Wednesday morning."
REPLY = (
    "Of course. I have Tuesday at 9:30 or Wednesday at 10:15 available for a 45 minute cleaning."
    " Which one suits you, and may I have your name and phone number to book it?"
)
CALLER_WORDS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel"] * 2
AGENT_TALK_MS = 6500  # the agent speaking: the caller is silent but the line carries audio
PAUSE_MS = 700


def _pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


class _Count:
    """A provider stream that only counts what it is sent."""

    def __init__(self) -> None:
        self.bytes = 0

    async def push_audio(self, pcm16: bytes) -> None:
        self.bytes += len(pcm16)


async def _stt_seconds(gated: bool) -> tuple[float, float]:
    """(seconds of call audio, seconds a cloud STT provider is sent) for the 20-turn call."""
    turn = bytes(32 * PAUSE_MS) + speak(CALLER_WORDS) + bytes(32 * (PAUSE_MS + AGENT_TALK_MS))
    counter = _Count()
    gate = GatedStream(counter, GateSettings())  # type: ignore[arg-type]
    total = 0
    for _ in range(TURNS):
        for i in range(0, len(turn), 640):
            chunk = turn[i : i + 640]
            total += len(chunk)
            if gated:
                await gate.push_audio(chunk)
            else:
                await counter.push_audio(chunk)
    return total / 32000, counter.bytes / 32000


async def _llm_tokens(budget: int) -> tuple[int, int]:
    """(prompt tokens, completion tokens) over the 20 turns, with ``budget`` (0 = none)."""
    from llm_svc.context_budget import fit
    from llm_svc.providers.base import ChatRequest, Message

    counter = shared_counter("o200k_base")
    await counter.ready()
    history = [Message("system", SYSTEM)]
    prompt = completion = 0
    for _ in range(TURNS):
        history.append(Message("user", USER))
        fitted = fit(ChatRequest(messages=tuple(history)), budget, counter)
        prompt += sum(counter.message(m) for m in fitted.request.messages)
        completion += counter.count(REPLY)
        history.append(Message("assistant", REPLY))
    return prompt, completion


async def _cost_per_minute() -> None:
    print(f"\n== usage: the demo conversation ({TURNS} turns) at cloud list prices, per call-minute")
    print(
        f"   price book {DEFAULT_BOOK.version}: Nova-3 $0.0077/min, gpt-4o-mini $0.15/$0.60 per 1M, Aura-2 $0.030/1k chars"
    )
    print(
        f"   {'VAD gate':>8} {'budget':>7} {'STT s sent':>10} {'prompt tok':>10} {'STT $/min':>10} {'LLM $/min':>10} {'TTS $/min':>10} {'total $/min':>11}"
    )
    for gated in (False, True):
        call_s, stt_s = await _stt_seconds(gated)
        for budget in (0, 600):
            prompt, completion = await _llm_tokens(budget)
            lines = [
                line("stt", "deepgram", "second", round(stt_s * 1000), model="nova-3"),
                line("llm", "openai", "input_token", prompt * 1000, model="gpt-4o-mini"),
                line("llm", "openai", "output_token", completion * 1000, model="gpt-4o-mini"),
                line("tts", "deepgram", "character", len(REPLY) * TURNS * 1000, model="aura-2"),
            ]
            usage = usage_pb2.Usage(lines=lines)
            DEFAULT_BOOK.price_usage(usage)
            minutes = call_s / 60
            per = [ln.cost_micros / 1e6 / minutes for ln in usage.lines]
            print(
                f"   {'on' if gated else 'off':>8} {budget or '-':>7} {stt_s:10.1f} {prompt:10d} {per[0]:10.5f}"
                f" {per[1] + per[2]:10.5f} {per[3]:10.5f} {usage.cost_micros / 1e6 / minutes:11.5f}"
            )
    print(
        f"   (call length {call_s / 60:.1f} min; {MESSAGE_OVERHEAD} tokens framing per message; budget 600 tokens)"
    )


def _lines(i: int) -> list[usage_pb2.UsageLine]:
    return [
        line("stt", "deepgram", "second", 60_000 + i % 1000, model="nova-3"),
        line("llm", "openai", "input_token", 4_000_000, model="gpt-4o-mini", turn=1),
        line("llm", "openai", "output_token", 400_000, model="gpt-4o-mini", turn=1),
        line("tts", "deepgram", "character", 600_000, model="aura-2", turn=1),
        line("tts", "elevenlabs", "character", 100_000, turn=2),
        line("llm", "openai", "input_token", 5_000_000, model="gpt-4o-mini", turn=2),
    ]


async def _ledger_writes(db: DatabaseSettings, tenant: str, writes: int) -> None:
    pool = await open_pool(db)
    repo = Repository(pool)
    samples: list[float] = []
    start = datetime.now(UTC) - timedelta(hours=1)
    try:
        for i in range(writes):
            call = pb.Call(status=pb.CALL_STATUS_COMPLETED, usage=usage_pb2.Usage(lines=_lines(i)))
            call.start_time.FromDatetime(start)
            call.end_time.FromDatetime(start + timedelta(seconds=90))
            t0 = time.perf_counter()
            async with repo.tenant(tenant) as scope:
                await scope.insert_call(f"bench-{i}", "", call)
            samples.append((time.perf_counter() - t0) * 1000)
    finally:
        await pool.close()
    print(
        f"\n== usage: ledger write per call (record + {len(_lines(0)) + 1} priced lines + rollups, one transaction), {writes} calls"
    )
    print(
        f"   p50 {_pct(samples, 0.5):.2f} ms   p99 {_pct(samples, 0.99):.2f} ms   max {max(samples):.2f} ms"
    )


async def _fill(db: DatabaseSettings, tenant: str, calls: int) -> float:
    """``calls`` calls' ledger lines over 90 days x 5 agents, rollups summed from them (the same
    rows ``record_call_usage`` writes, inserted in bulk)."""
    pool = await open_pool(db)
    t0 = time.perf_counter()
    try:
        async with Repository(pool).tenant(tenant) as scope:
            conn = scope._conn
            await conn.execute(
                b"INSERT INTO usage_lines (tenant_id, call_id, line_no, day, agent_id, turn, component,"
                b" provider, model, key_label, unit, quantity_milli, cost_micros, unpriced, price_book_version)"
                b" SELECT %s, 'fill-' || c, l, current_date - (c %% 90), 'agent-' || (c %% 5), 0,"
                b" (ARRAY['stt','llm','llm','tts','call'])[l], (ARRAY['deepgram','openai','openai','deepgram','voiceai'])[l],"
                b" (ARRAY['nova-3','gpt-4o-mini','gpt-4o-mini','aura-2',''])[l], 'default',"
                b" (ARRAY['second','input_token','output_token','character','second'])[l],"
                b" 60000 + c %% 997, 500 + c %% 13, false, %s"
                b" FROM generate_series(1, %s) c, generate_series(1, 5) l",
                (tenant, DEFAULT_BOOK.version, calls),
            )
            await conn.execute(
                b"INSERT INTO usage_rollups (tenant_id, day, agent_id, component, provider, model, unit,"
                b" quantity_milli, cost_micros, lines, unpriced_lines)"
                b" SELECT tenant_id, day, agent_id, component, provider, model, unit, sum(quantity_milli),"
                b" sum(cost_micros), count(*), 0 FROM usage_lines WHERE call_id LIKE 'fill-%%'"
                b" GROUP BY tenant_id, day, agent_id, component, provider, model, unit"
                b" ON CONFLICT (tenant_id, day, agent_id, component, provider, model, unit) DO UPDATE SET"
                b" quantity_milli = usage_rollups.quantity_milli + EXCLUDED.quantity_milli,"
                b" cost_micros = usage_rollups.cost_micros + EXCLUDED.cost_micros,"
                b" lines = usage_rollups.lines + EXCLUDED.lines"
            )
    finally:
        await pool.close()
    return time.perf_counter() - t0


async def _reads(api: TenantApi, tenant: str, n: int) -> None:
    stub = us_grpc.UsageServiceStub(api.channel)
    md = api.md(tenant, "viewer")
    since = datetime.now(UTC) - timedelta(days=120)
    cases = {
        "GetUsage month-to-date, totals": lambda: us.GetUsageRequest(parent=f"tenants/{tenant}"),
        "GetUsage 120 days by agent x provider": lambda: _ranged(
            us.GetUsageRequest(
                parent=f"tenants/{tenant}", group_by=[us.USAGE_GROUP_BY_AGENT, us.USAGE_GROUP_BY_PROVIDER]
            ),
            since,
        ),
        "ListUsage 120 days by day x model, page 50": lambda: _ranged(
            us.ListUsageRequest(
                parent=f"tenants/{tenant}", group_by=[us.USAGE_GROUP_BY_DAY, us.USAGE_GROUP_BY_MODEL]
            ),
            since,
        ),
    }
    for name, make in cases.items():
        samples = []
        for _ in range(n):
            request = make()
            t0 = time.perf_counter()
            await (
                stub.GetUsage(request, metadata=md)
                if isinstance(request, us.GetUsageRequest)
                else stub.ListUsage(request, metadata=md)
            )  # type: ignore[arg-type]
            samples.append((time.perf_counter() - t0) * 1000)
        print(f"   {name:<44} p50 {_pct(samples, 0.5):6.2f} ms   p99 {_pct(samples, 0.99):6.2f} ms")
    totals = await stub.GetUsage(_ranged(us.GetUsageRequest(parent=f"tenants/{tenant}"), since), metadata=md)
    print(f"   (the tenant's 120 days: {totals.calls} calls, ${totals.cost_micros / 1e6:,.2f})")


def _ranged(
    request: us.GetUsageRequest | us.ListUsageRequest, since: datetime
) -> us.GetUsageRequest | us.ListUsageRequest:
    request.start_time.FromDatetime(since)
    return request


async def _run(calls: int, writes: int) -> None:
    await _cost_per_minute()
    with tempfile.TemporaryDirectory() as tmp:
        db = DatabaseSettings(url="", pg_data_dir=Path(tmp) / "pg")
        async with tenant_api(db, Path(tmp) / "auth") as api:
            tenant = await api.new_tenant(pb.PLAN_TIER_ENTERPRISE)
            await _ledger_writes(db, tenant, writes)
            big = await api.new_tenant(pb.PLAN_TIER_ENTERPRISE)
            filled = await _fill(db, big, calls)
            print(
                f"\n== usage: reads for a tenant with {calls:,} calls in the ledger (filled in {filled:.1f} s)"
            )
            await _reads(api, big, 50)


def main(argv: list[str] | None = None) -> None:
    """Run the usage benchmark and print its tables."""
    parser = argparse.ArgumentParser(prog="python -m tests.bench.usage")
    parser.add_argument("--calls", type=int, default=100_000)
    parser.add_argument("--writes", type=int, default=300)
    args = parser.parse_args(argv)
    uvloop.run(_run(args.calls, args.writes))


if __name__ == "__main__":
    main()
