"""Discovery benchmark: Consul health changes reaching the resolver, and stream balancing.

Four real llm_svc hosts (offline responder) register through the real py-consul client with the
Consul API double (an HTTP server on loopback, in this process) and pass its real gRPC check.

- Flip latency: an instance's check turns critical in the agent -> the ConsulResolver no longer
  returns it (one blocking query returning with the change), and back to passing -> returned
  again; p50/p99 over ``--flips`` flips each way (polled every 0.2 ms).
- Balance: ``--streams`` StreamChat streams opened through one ChannelPool; held all at once
  (streams per instance at the peak), and churned (opened 2 ms apart, each living 20-400 ms:
  streams assigned per instance, and busiest minus least busy instance's streams in flight,
  sampled at every open).

    python -m tests.bench.discovery [--flips 50] [--streams 200]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import statistics
import time

import uvloop

from common.consul_resolver import ConsulResolver
from common.discovery import ChannelPool
from tests.doubles.consul_api import ConsulApiDouble
from tests.integration.consul_harness import chat, consul_double, consul_settings, registered_llm

INSTANCES = 4


def _pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


async def _until(predicate: object) -> float:
    t0 = time.perf_counter()
    while True:  # polled, not awaited on an event: the resolver has no change callback to hook
        if predicate():  # type: ignore[operator]
            break
        await asyncio.sleep(0.0002)
    return (time.perf_counter() - t0) * 1000


async def _flips(
    api: ConsulApiDouble, resolver: ConsulResolver, ids: dict[str, str], n: int
) -> tuple[list[float], list[float]]:
    down: list[float] = []
    up: list[float] = []
    watch = resolver._watches["llm"]
    for i in range(n):
        addr = sorted(ids)[i % len(ids)]
        t0 = time.perf_counter()
        api.set_status(ids[addr], "critical")
        await _until(lambda a=addr: all(e.address != a for e in watch.endpoints))
        down.append((time.perf_counter() - t0) * 1000)
        t0 = time.perf_counter()
        api.set_status(ids[addr], "passing")
        await _until(lambda a=addr: any(e.address == a for e in watch.endpoints))
        up.append((time.perf_counter() - t0) * 1000)
    return down, up


async def _held(pool: ChannelPool, n: int) -> dict[str, int]:
    async with contextlib.AsyncExitStack() as stack:
        for _ in range(n):
            await stack.enter_async_context(pool.stream())
        return pool.in_flight()


async def _churn(pool: ChannelPool, n: int) -> tuple[dict[str, int], list[float]]:
    assigned: dict[str, int] = {}
    spread: list[float] = []
    rng = random.Random(7)

    async def one(words: int) -> None:
        before = pool.in_flight()
        async with pool.stream() as ch:
            now = pool.in_flight()
            [addr] = [a for a, k in now.items() if k > before.get(a, 0)]
            assigned[addr] = assigned.get(addr, 0) + 1
            spread.append(max(now.values()) - min(now.values()))
            await chat(ch, " ".join(["word"] * words) + ".")

    tasks = []
    for _ in range(n):
        tasks.append(asyncio.ensure_future(one(rng.randint(1, 20))))  # 20 ms a word: 20-400 ms
        await asyncio.sleep(0.002)
    await asyncio.gather(*tasks)
    return assigned, spread


async def _run(flips: int, streams: int) -> None:
    with consul_double() as api:
        settings = consul_settings(api)
        async with contextlib.AsyncExitStack() as hosts:
            ids = {}
            for _ in range(INSTANCES):
                addr, reg, _host = await hosts.enter_async_context(registered_llm(api, llm_token_delay_ms=20))
                ids[addr] = reg.service_id
            resolver = ConsulResolver(settings)
            pool = ChannelPool("llm", resolver)
            try:
                assert len(await resolver.resolve("llm")) == INSTANCES
                down, up = await _flips(api, resolver, ids, flips)
                held = await _held(pool, streams)
                assigned, spread = await _churn(pool, streams)
            finally:
                await pool.close()
                await resolver.aclose()
    print(f"\n== Discovery: Consul API double + ConsulResolver + ChannelPool ({INSTANCES} llm_svc instances)")
    print(f"{'measure':<52} {'p50':>8} {'p99':>8} {'max':>8}")
    for name, xs in (("critical -> no longer resolved (ms)", down), ("passing -> resolved again (ms)", up)):
        print(f"{name:<52} {_pct(xs, 0.5):>8.2f} {_pct(xs, 0.99):>8.2f} {max(xs):>8.2f}")
    mean = statistics.mean(held.values())
    print(
        f"{streams} streams held at once, per instance: {sorted(held.values())} (busiest/mean {max(held.values()) / mean:.2f})"
    )
    per = [assigned.get(a, 0) for a in sorted(ids)]
    print(
        f"{streams} streams churned (20-400 ms each), assigned per instance: {per}"
        f" (busiest/mean {max(per) / statistics.mean(per):.2f}); in flight, busiest minus least at"
        f" each open: p50 {_pct(spread, 0.5):.0f} p99 {_pct(spread, 0.99):.0f} max {max(spread):.0f}"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--flips", type=int, default=50)
    parser.add_argument("--streams", type=int, default=200)
    args = parser.parse_args(argv)
    uvloop.run(_run(args.flips, args.streams))


if __name__ == "__main__":
    main()
