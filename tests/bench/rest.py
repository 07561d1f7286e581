"""REST front benchmark: what the HTTP/JSON front adds over calling tenant_svc's gRPC directly
(GetAgent, ListAgents 20 per page, ListCalls) at N concurrent clients, and the portal's calls page
load time in headless Chromium for a tenant with 10k calls against one with 10 (pagination keeps
it flat).

tenant_svc (embedded PostgreSQL) runs in this process like the tenancy section; the front runs as
its own process (``python -m tenant_svc.rest``), as deployed; the REST clients are aiohttp.

    python -m tests.bench.rest [--seconds 5] [--concurrency 16] [--calls 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import psutil
import uvloop
from google.protobuf import timestamp_pb2

from common.gen.voiceai.tenant.v1 import resources_pb2 as pb
from common.gen.voiceai.tenant.v1 import tenant_service_pb2 as svc
from tenant_svc.db.database import DatabaseSettings
from tests.bench.tenancy import _drive, _pct
from tests.integration.tenant_harness import TenantApi, tenant_api

AGENTS = 100
Op = Callable[[int], Awaitable[object]]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _spawn(tenant_address: str, port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "VOICEAI_REST_LOG_LEVEL": "WARNING"}
    return subprocess.Popen(
        [sys.executable, "-m", "tenant_svc.rest", "--port", str(port), "--tenant-address", tenant_address],
        env=env,
        stdin=subprocess.DEVNULL,
    )


async def _front(tenant_address: str) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    proc = _spawn(tenant_address, port)
    url = f"http://127.0.0.1:{port}"
    async with aiohttp.ClientSession() as http:
        for _ in range(100):
            try:
                async with http.get(f"{url}/openapi.json") as r:
                    if r.status == 200:
                        return proc, url
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    proc.terminate()
    raise RuntimeError("the REST front did not start")


async def _seed_calls(api: TenantApi, tenant: str, count: int) -> None:
    md = api.md(tenant, "agent")
    turns = [
        pb.CallTurn(index=i, caller_text="Hello there", agent_text="Hi, how can I help?") for i in range(4)
    ]

    async def one(i: int) -> None:
        await api.stub.CreateCall(
            svc.CreateCallRequest(
                parent=f"tenants/{tenant}",
                call_id=f"call-{i:06d}",
                call=pb.Call(
                    agent=f"tenants/{tenant}/agents/agent-000",
                    status=pb.CALL_STATUS_COMPLETED,
                    start_time=timestamp_pb2.Timestamp(seconds=1_800_000_000 + i),
                    turns=turns,
                ),
            ),
            metadata=md,
        )

    for start in range(0, count, 64):
        await asyncio.gather(*(one(i) for i in range(start, min(count, start + 64))))


async def _run(seconds: float, concurrency: int, calls: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        db = DatabaseSettings(url="", pg_data_dir=Path(tmp) / "pg")
        async with tenant_api(db, Path(tmp) / "auth") as api:
            proc, url = await _front(api.address)
            try:
                await _bench(api, url, psutil.Process(proc.pid), seconds, concurrency, calls)
            finally:
                proc.terminate()
                proc.wait(10)


async def _bench(
    api: TenantApi, url: str, front: psutil.Process, seconds: float, concurrency: int, calls: int
) -> None:
    tenant, small = await api.new_tenant(), await api.new_tenant()
    for i in range(AGENTS):
        await api.new_agent(tenant, f"agent-{i:03d}", "You are a receptionist. " * 20)
    await api.new_agent(small, "agent-000")
    t0 = time.perf_counter()
    await _seed_calls(api, tenant, calls)
    await _seed_calls(api, small, 10)
    print(
        f"\n== rest: REST front vs direct gRPC, {concurrency} concurrent clients ({calls} calls seeded in {time.perf_counter() - t0:.0f} s)"
    )
    md = api.md(tenant, "admin")
    parent = f"tenants/{tenant}"
    token = api.token(tenant, "admin")
    grpc_ops: dict[str, Op] = {
        "GetAgent": lambda i: api.stub.GetAgent(
            svc.GetAgentRequest(name=f"{parent}/agents/agent-{i % AGENTS:03d}"), metadata=md
        ),
        "ListAgents (20/page)": lambda _i: api.stub.ListAgents(
            svc.ListAgentsRequest(parent=parent, page_size=20), metadata=md
        ),
        "ListCalls (50/page)": lambda _i: api.stub.ListCalls(
            svc.ListCallsRequest(parent=parent, page_size=50), metadata=md
        ),
    }
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(
        connector=connector, headers={"authorization": f"Bearer {token}"}
    ) as http:

        def rest(path: Callable[[int], str]) -> Op:
            async def op(i: int) -> object:
                async with http.get(url + path(i)) as r:
                    body = await r.read()
                    if r.status != 200:
                        raise RuntimeError(f"{r.status}: {body[:200]!r}")
                    return body

            return op

        rest_ops: dict[str, Op] = {
            "GetAgent": rest(lambda i: f"/v1/{parent}/agents/agent-{i % AGENTS:03d}"),
            "ListAgents (20/page)": rest(lambda _i: f"/v1/{parent}/agents?pageSize=20"),
            "ListCalls (50/page)": rest(lambda _i: f"/v1/{parent}/calls?pageSize=50"),
        }
        print(
            f"{'operation':<24}{'gRPC p50':>10}{'gRPC p99':>10}{'REST p50':>10}{'REST p99':>10}"
            f"{'gRPC ops/s':>12}{'REST ops/s':>12}{'front CPU us/req':>18}"
        )
        for label, direct in grpc_ops.items():
            row = []
            for op in (direct, rest_ops[label]):
                await _drive(0.5, concurrency, op)
                cpu0 = sum(front.cpu_times()[:2])
                rate, samples = await _drive(seconds, concurrency, op)
                cpu = sum(front.cpu_times()[:2]) - cpu0  # the front's own CPU (none for direct gRPC)
                row.append((rate, _pct(samples, 0.5), _pct(samples, 0.99), cpu / max(1, len(samples)) * 1e6))
            (g_rate, g50, g99, _), (r_rate, r50, r99, r_cpu) = row
            print(
                f"{label:<24}{g50:>10.2f}{g99:>10.2f}{r50:>10.2f}{r99:>10.2f}"
                f"{g_rate:>12.0f}{r_rate:>12.0f}{r_cpu:>18.0f}"
            )
    await _portal_load(api, url, {f"{calls} calls": tenant, "10 calls": small})


async def _portal_load(api: TenantApi, url: str, tenants: dict[str, str]) -> None:
    chromium = shutil.which("chromium")
    if chromium is None:
        print("portal page load: skipped (no chromium; `make browsers`)")
        return
    from playwright.async_api import async_playwright

    from tests.integration.test_portal_browser import FLAGS

    print(f"{'portal calls page':<24}{'median ms':>10}{'max ms':>10}   (sign-in link -> first 50 rows shown)")
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=chromium, args=FLAGS)
        try:
            for label, tenant in tenants.items():
                times = []
                for _ in range(7):
                    context = await browser.new_context()
                    page = await context.new_page()
                    t0 = time.perf_counter()
                    await page.goto(f"{url}/portal/#token={api.token(tenant, 'admin')}&tenant={tenant}")
                    await page.get_by_role("heading", name="Agents").wait_for()
                    await page.evaluate("location.hash = '#/calls'")
                    await page.locator("tbody a[href^='#/calls/']").first.wait_for(timeout=60_000)
                    times.append((time.perf_counter() - t0) * 1000)
                    await context.close()
                print(f"{label:<24}{_pct(times[1:], 0.5):>10.0f}{max(times[1:]):>10.0f}")
        finally:
            await browser.close()


def main(argv: list[str] | None = None) -> None:
    """Run the section."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--calls", type=int, default=10_000)
    args = parser.parse_args(argv)
    uvloop.run(_run(args.seconds, args.concurrency, args.calls))


if __name__ == "__main__":
    main()
