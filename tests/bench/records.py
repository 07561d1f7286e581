"""Durable call records benchmark (issue 15): what writing a record adds to a call's end on the
gateway's event loop, the outbox's on-disk put latency (its own thread), and the drain rate of
the outbox to a real tenant_svc (gRPC + PostgreSQL, embedded) through CallRecordInternalService.

    python -m tests.bench.records [--calls 2000] [--turns 10]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import uvloop

from common.auth import AuthSettings, build_auth
from common.discovery import ChannelPool, StaticResolver
from gateway.call_record import CallRecordBuilder
from gateway.records import RecordDelivery, RecordOutbox, RecordSettings, Snapshot, gateway_credential
from gateway.session.events import CallEnded, EndReason, TurnTimings, Usage
from gateway.session.history import HistoryEntry
from gateway.tenancy import CallLedger
from tenant_svc.db.database import DatabaseSettings
from tests.bench.tenancy import _pct
from tests.integration.tenant_harness import tenant_api


def _builder(turns: int) -> CallRecordBuilder:
    b = CallRecordBuilder("bench-tenant", "front-desk")
    for t in range(1, turns + 1):
        b.entry(HistoryEntry("user", "What are your opening hours on Sunday, please?", t))
        b.entry(HistoryEntry("assistant", "We are open from nine to five on Sundays. " * 3, t))
        b.event(TurnTimings(t, 300.0, 320.0, 500.0, 520.0, 540.0))
    return b


async def _hot_path(calls: int, turns: int, outbox_dir: Path) -> None:
    """The loop's share of a call end: build the record, serialize it, queue it (a task)."""
    ledger = CallLedger(None, None)
    ledger.records = RecordDelivery(None, RecordOutbox(outbox_dir / "hot.sqlite3"), None)  # type: ignore[arg-type]
    await ledger.records.outbox.open()
    builders = [_builder(turns) for _ in range(calls)]
    ended = CallEnded(EndReason.CALLER_HANGUP, "bye", Usage(), turns)
    samples = []
    for i, b in enumerate(builders):
        t0 = time.perf_counter()
        ledger.finish(None, "bench-tenant", f"call-{i}", b.build(ended))
        samples.append((time.perf_counter() - t0) * 1e6)
        if i % 50 == 0:
            await asyncio.sleep(0)  # let the queued puts run, as a busy gateway would
    await ledger.close(30.0)
    put = []
    box = RecordOutbox(outbox_dir / "put.sqlite3")
    await box.open()
    payload = builders[0].build(ended).SerializeToString()
    for i in range(calls):
        t0 = time.perf_counter()
        await box.put(Snapshot("bench-tenant", f"call-{i}", 1, True, payload))
        put.append((time.perf_counter() - t0) * 1e6)
    await box.close()
    print(f"\n== records: a {turns}-turn call's record ({len(payload)} bytes), {calls} calls")
    print(f"{'step':<52}{'p50 µs':>10}{'p99 µs':>10}")
    print(
        f"{'added to call end on the loop (build+queue)':<52}{_pct(samples, 0.5):>10.0f}{_pct(samples, 0.99):>10.0f}"
    )
    print(
        f"{'outbox put (SQLite WAL, own thread, awaited)':<52}{_pct(put, 0.5):>10.0f}{_pct(put, 0.99):>10.0f}"
    )


async def _drain(calls: int, turns: int, tmp: Path) -> None:
    db = DatabaseSettings(url="", pg_data_dir=tmp / "pg")
    async with tenant_api(db, tmp / "auth") as api:
        tenant = await api.new_tenant()
        issuer = build_auth(
            AuthSettings(mode="dev", dev_key_dir=str(tmp / "auth")), issue_internal_tokens=True
        )
        pool = ChannelPool("tenant", StaticResolver({"tenant": [api.address]}))
        box = RecordOutbox(tmp / "drain.sqlite3", max_calls=calls + 10)
        await box.open()
        b = _builder(turns)
        b.tenant_id = tenant
        payload = b.build(CallEnded(EndReason.CALLER_HANGUP, "bye", Usage(), turns)).SerializeToString()
        for i in range(calls):
            await box.put(Snapshot(tenant, f"drain-{i}", 1, True, payload))
        await box.close()
        for concurrency in (8, 32):
            delivery = RecordDelivery.at(
                pool,
                tmp / "drain.sqlite3",
                gateway_credential(issuer.internal_issuer),
                RecordSettings(drain_concurrency=concurrency, outbox_max_calls=calls + 10),
            )
            if concurrency == 32:  # refill with new revisions: every one is written again
                refill = RecordOutbox(tmp / "drain.sqlite3", max_calls=calls + 10)
                await refill.open()
                for i in range(calls):
                    await refill.put(Snapshot(tenant, f"drain-{i}", 2, True, payload))
                await refill.close()
            t0 = time.perf_counter()
            await delivery.start()
            await delivery.flush(300.0)
            elapsed = time.perf_counter() - t0
            await delivery.close()
            print(
                f"{'outbox drain to tenant_svc, ' + str(concurrency) + ' in flight':<52}{calls / elapsed:>10.0f} records/s"
            )
        await pool.close()


async def _run(calls: int, turns: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        await _hot_path(calls, turns, Path(tmp))
        await _drain(calls, turns, Path(tmp))


def main(argv: list[str] | None = None) -> None:
    """Prints the records table."""
    parser = argparse.ArgumentParser(prog="python -m tests.bench.records", description=__doc__)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--turns", type=int, default=10)
    args = parser.parse_args(argv)
    uvloop.run(_run(args.calls, args.turns))


if __name__ == "__main__":
    main()
