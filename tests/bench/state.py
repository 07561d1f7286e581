"""State benchmark: config-cache lookups and quota checks against an embedded Redis.

Latency of one operation as the gateway would call it (redis-py asyncio on uvloop, unix socket),
three ways: one at a time; started at a fixed 2000/s (far above what call admission needs, the
figure the targets apply to); and 32 tasks back to back (saturation: throughput, and p99 that is
mostly queueing on the one event loop). Targets: config lookup on a cache hit <= 1 ms p99;
quota check <= 1 ms p99.

    python -m tests.bench.state [--n 5000]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import tempfile
import time
from collections.abc import Awaitable, Callable

import uvloop

from common.config_cache import ConfigCache
from common.gen.voiceai.gateway.v1 import gateway_pb2
from common.quotas import ConcurrencyLimiter, RateLimiter
from common.redis_conn import RedisSettings, open_redis
from common.redis_embedded import EmbeddedRedis

CONCURRENCY = 32
PACED_PER_S = 2000  # ~10x the Redis work of 200 calls starting within one second
Op = Callable[[int], Awaitable[object]]
AGENT = gateway_pb2.AgentConfig(
    system_prompt="You are the front desk of a dental clinic. " * 40,
    greeting="Hello, thanks for calling. How can I help?",
    voice="aura-2-thalia-en",
    keyterms=[f"term{i}" for i in range(50)],
).SerializeToString()


def _pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _closed_loop(op: Op, n: int, tasks: int) -> tuple[list[float], float]:
    """``tasks`` tasks issuing back to back (``tasks`` > 1 saturates the loop): latencies, ops/s."""
    samples: list[float] = []

    async def worker(todo: range) -> None:
        for i in todo:
            t0 = time.perf_counter()
            await op(i)
            samples.append((time.perf_counter() - t0) * 1000)

    # Warm up at the same concurrency: the pool's connections are open and scripts loaded.
    await asyncio.gather(*(worker(range(n + t * 20, n + t * 20 + 20)) for t in range(tasks)))
    samples.clear()
    t0 = time.perf_counter()
    await asyncio.gather(*(worker(range(t, n, tasks)) for t in range(tasks)))
    return samples, n / (time.perf_counter() - t0)


async def _open_loop(op: Op, n: int, per_s: float) -> tuple[list[float], float]:
    """Operations started on a fixed schedule, as arriving calls would, each timed from its
    launch (so time spent queued on the loop behind other operations counts)."""
    samples: list[float] = []
    loop = asyncio.get_running_loop()

    async def one(i: int, launched: float) -> None:
        await op(i)
        samples.append((time.perf_counter() - launched) * 1000)

    running: set[asyncio.Task[None]] = set()
    start = time.perf_counter()
    for i in range(n):
        await asyncio.sleep(max(0.0, start + i / per_s - time.perf_counter()))
        task = loop.create_task(one(i, time.perf_counter()))
        running.add(task)
        task.add_done_callback(running.discard)
    await asyncio.gather(*running)
    return samples, n / (time.perf_counter() - start)


async def _run(url: str, n: int) -> list[tuple[str, str, list[float], float]]:
    rows: list[tuple[str, str, list[float], float]] = []
    async with open_redis(RedisSettings(url=url, max_connections=CONCURRENCY)) as redis:
        l1 = ConfigCache(redis, prefix="bench", l1_ttl_s=60.0)
        l2 = ConfigCache(redis, prefix="bench", l1_size=0)
        calls = ConcurrencyLimiter(redis, prefix="bench")
        rate = RateLimiter(redis, prefix="bench")
        await l2.set("tenant-0", "agent", AGENT, version=0)

        async def load() -> bytes:
            return AGENT

        async def miss(i: int) -> None:
            # A name never seen: Redis miss, load (free here), versioned set.
            await l2.get_or_load("tenant-0", f"agent-{i}", load)

        async def acquire_release(i: int) -> None:
            lease = await calls.acquire(f"tenant-{i % 50}", f"call-{i}", 1000, 30.0)
            await lease.release()

        ops: list[tuple[str, Op]] = [
            ("config lookup, L1 hit", lambda i: l1.get("tenant-0", "agent")),
            ("config lookup, Redis hit (L1 off)", lambda i: l2.get("tenant-0", "agent")),
            ("config lookup, miss (get + load + set)", miss),
            ("quota: acquire + release lease", acquire_release),
            ("quota: rate check", lambda i: rate.check(f"tenant-{i % 50}", 1_000_000, 1_000_000)),
        ]
        for name, op in ops:
            rows.append((name, "1 task", *await _closed_loop(op, n, 1)))
            rows.append((name, f"{PACED_PER_S}/s", *await _open_loop(op, n, PACED_PER_S)))
            rows.append((name, f"{CONCURRENCY} tasks", *await _closed_loop(op, n, CONCURRENCY)))
        await redis.flushdb()
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=5000, help="operations per row")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-redis-") as data, EmbeddedRedis(data) as server:
        gc.freeze()
        rows = uvloop.run(_run(server.url, args.n))
    print("\n== State: config cache and quotas on an embedded Redis (unix socket; targets p99 <= 1 ms)")
    print(f"{'operation':<40} {'load':>9} {'ops/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7}")
    for name, load, samples, rate in rows:
        print(
            f"{name:<40} {load:>9} {rate:>8.0f} {_pct(samples, 0.5):>7.3f} {_pct(samples, 0.99):>7.3f}"
            f" {max(samples):>7.2f}"
        )


if __name__ == "__main__":
    main()
