"""Tenancy benchmark: tenant_svc GetAgent / ListAgents throughput and latency over real gRPC,
PostgreSQL (embedded) and dev-mode JWTs, i.e. every request authenticated, RBAC-checked and run
in its own tenant-bound transaction under RLS. This is also the config-lookup cost on a cache miss
(the gateway's GetAgent).

    python -m tests.bench.tenancy [--seconds 5] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import uvloop

from common.gen.voiceai.tenant.v1 import tenant_service_pb2 as svc
from tenant_svc.db.database import DatabaseSettings
from tests.integration.tenant_harness import TenantApi, tenant_api

AGENTS = 100


def _pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


async def _drive(
    seconds: float, concurrency: int, op: Callable[[int], Awaitable[object]]
) -> tuple[float, list[float]]:
    samples: list[float] = []
    stop = time.perf_counter() + seconds

    async def worker(w: int) -> None:
        i = w
        while time.perf_counter() < stop:
            t0 = time.perf_counter()
            await op(i)
            samples.append((time.perf_counter() - t0) * 1000)
            i += concurrency

    start = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    return len(samples) / (time.perf_counter() - start), samples


async def _run(seconds: float, concurrency: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        db = DatabaseSettings(url="", pg_data_dir=Path(tmp) / "pg")
        async with tenant_api(db, Path(tmp) / "auth") as api:
            await _bench(api, seconds, concurrency)


async def _bench(api: TenantApi, seconds: float, concurrency: int) -> None:
    tenant = await api.new_tenant()
    for i in range(AGENTS):
        await api.new_agent(tenant, f"agent-{i:03d}", "You are a receptionist. " * 20)
    md = api.md(tenant, "agent")
    parent = f"tenants/{tenant}"

    async def get(i: int) -> object:
        return await api.stub.GetAgent(
            svc.GetAgentRequest(name=f"{parent}/agents/agent-{i % AGENTS:03d}"), metadata=md
        )

    async def list_page(_i: int) -> object:
        return await api.stub.ListAgents(svc.ListAgentsRequest(parent=parent, page_size=20), metadata=md)

    print(
        f"\n== tenancy: tenant_svc over gRPC + PostgreSQL (RLS, JWT, RBAC), {concurrency} concurrent clients"
    )
    print(f"{'operation':<28}{'ops/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'one-at-a-time p99 ms':>24}")
    for label, op in (("GetAgent", get), ("ListAgents (20 per page)", list_page)):
        await _drive(0.5, concurrency, op)  # warm the pool and caches
        rate, samples = await _drive(seconds, concurrency, op)
        _, single = await _drive(min(2.0, seconds), 1, op)
        print(
            f"{label:<28}{rate:>10.0f}{_pct(samples, 0.5):>10.2f}{_pct(samples, 0.99):>10.2f}{_pct(single, 0.99):>24.2f}"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args(argv)
    uvloop.run(_run(args.seconds, args.concurrency))


if __name__ == "__main__":
    main()
