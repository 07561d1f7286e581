"""LLM provider benchmark: what the OpenAI adapter adds, and how fast a chain falls back.

    python -m tests.bench.providers_llm [--runs 300] [--latency-ms 20] [--fallback-runs 50]

The OpenAI double (tests/doubles/openai_api.py) runs in its own process with a fixed latency
before its first byte, so its own work is not counted as the adapter's. The real openai SDK
talks to it over loopback.

- Adapter overhead: first token latency (stream() called -> first TokenDelta) minus the double's
  configured latency, sequential requests on a warm client; for the adapter alone and through
  the provider chain. Two floors under it: the bare SDK call, and bare HTTP with httpx2 (the
  client the SDK uses), so what the adapter adds over the SDK is visible. The local engine's
  first token is shown for scale.
- Fallback switch time, chain openai -> local: the local engine's first token minus the end of
  the failed attempt, i.e. minus the first-token timeout (a double that never answers in time),
  minus the double's latency (a double that answers HTTP 503, no retries), or minus the
  queueing timeout (openai over its cap).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx2
import numpy as np
import openai

from common.providers import EnvKeySource, resolve_key
from llm_svc.chain import ProviderChain
from llm_svc.providers.base import ChatModel, ChatRequest, Message, TokenDelta, ToolCallDelta
from llm_svc.providers.offline_responder import OfflineResponder
from llm_svc.providers.openai_chat import OpenAIChat, OpenAIOptions
from tests.bench.providers import in_service_runtime

REQUEST = ChatRequest(
    (Message("system", "Be brief."), Message("user", "what are your opening hours")), max_tokens=64
)
ENV = {"OPENAI_API_KEY": "sk-bench"}


@contextlib.contextmanager
def double(*args: str) -> Iterator[str]:
    """The double in a child process; yields its base URL."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.doubles.openai_api", *args], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.terminate()
        proc.wait(5)


async def first_token_ms(engine: ChatModel) -> float:
    """Time to the first delta; the reply is read to its end so the connection is reused."""
    started = time.perf_counter()
    first = None
    async for event in engine.stream(REQUEST):
        if first is None and isinstance(event, TokenDelta | ToolCallDelta):
            first = (time.perf_counter() - started) * 1000
    assert first is not None, "the reply had no token"
    return first


async def series(engine: ChatModel, runs: int, warmup: int = 20) -> list[float]:
    for _ in range(warmup):
        await first_token_ms(engine)
    return [await first_token_ms(engine) for _ in range(runs)]


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def line(label: str, values: list[float]) -> str:
    return f"  {label:<58} p50 {pct(values, 50):7.2f} ms  p99 {pct(values, 99):7.2f} ms  (n={len(values)})"


class RawSdk:
    """The floors the adapter stands on: the bare SDK call, and bare HTTP with the SDK's client."""

    name = "raw"

    def __init__(self, base_url: str) -> None:
        self.client = openai.AsyncOpenAI(base_url=base_url, api_key="sk-bench", max_retries=0)
        self.messages = [{"role": m.role, "content": m.content} for m in REQUEST.messages]
        self.body = {"model": "bench", "messages": self.messages, "stream": True, "max_tokens": 64}
        self.http = httpx2.AsyncClient()
        self.url = base_url + "/chat/completions"

    async def sdk_ms(self) -> float:
        started, first = time.perf_counter(), None
        chunks = await self.client.chat.completions.create(
            model="bench",
            messages=self.messages,
            stream=True,
            max_tokens=64,  # type: ignore[arg-type]
        )
        async for chunk in chunks:
            if first is None and chunk.choices and chunk.choices[0].delta.content:
                first = (time.perf_counter() - started) * 1000
        assert first is not None
        return first

    async def http_ms(self) -> float:
        started, first = time.perf_counter(), None
        async with self.http.stream("POST", self.url, json=self.body) as resp:
            async for text in resp.aiter_lines():
                if first is None and '"content": "' in text and '"content": ""' not in text:
                    first = (time.perf_counter() - started) * 1000
        assert first is not None
        return first

    async def aclose(self) -> None:
        await self.client.close()
        await self.http.aclose()


async def overhead(base_url: str, runs: int, latency_ms: float) -> list[str]:
    adapter = OpenAIChat(OpenAIOptions(base_url=base_url, model="bench"), keys=EnvKeySource(ENV))
    chain = ProviderChain({"openai": adapter, "local": OfflineResponder()}, ["openai", "local"])
    raw = RawSdk(base_url)
    try:
        alone = [t - latency_ms for t in await series(adapter, runs)]
        chained = [t - latency_ms for t in await series(chain, runs)]
        for _ in range(20):
            await raw.sdk_ms()
            await raw.http_ms()
        sdk = [await raw.sdk_ms() - latency_ms for _ in range(runs)]
        http = [await raw.http_ms() - latency_ms for _ in range(runs)]
    finally:
        await adapter.aclose()
        await raw.aclose()
    local = await series(OfflineResponder(), runs)
    return [
        line("openai adapter overhead (first token - double latency)", alone),
        line("openai via the chain, overhead", chained),
        line("  floor: the bare openai SDK call, overhead", sdk),
        line("  floor: bare HTTP (httpx2, the SDK's client), overhead", http),
        line("local (offline responder) first token", local),
    ]


async def switch(
    base_url: str, runs: int, options: OpenAIOptions, failed_after_ms: float, hold: bool = False
) -> list[float]:
    adapter = OpenAIChat(
        dataclasses.replace(options, base_url=base_url, model="bench"), keys=EnvKeySource(ENV)
    )
    chain = ProviderChain({"openai": adapter, "local": OfflineResponder()}, ["openai", "local"])
    try:
        async with contextlib.AsyncExitStack() as stack:
            if hold:  # fill the cap of the key the adapter uses, for the whole series
                key = resolve_key(options.key_env, "", ENV)
                for _ in range(options.cap):
                    await stack.enter_async_context(adapter.limiter.slot(key))
            return [await first_token_ms(chain) - failed_after_ms for _ in range(runs)]
    finally:
        await adapter.aclose()


async def fallbacks(runs: int, latency_ms: float) -> list[str]:
    out = []
    timeout = OpenAIOptions(first_token_timeout_s=0.1, max_attempts=1)
    with double("--first-byte-delay-ms", "60000") as url:
        values = await switch(url, runs, timeout, 100.0)
    out.append(line("first-token timeout (100 ms) -> local, beyond the timeout", values))
    with double("--status", "503", "--latency-ms", str(latency_ms)) as url:
        values = await switch(url, runs, OpenAIOptions(max_attempts=1), latency_ms)
    out.append(line(f"HTTP 503 after {latency_ms:g} ms, no retry -> local, beyond the 503", values))
    capped = OpenAIOptions(cap=1, queue_timeout_s=0.0)
    with double("--latency-ms", str(latency_ms)) as url:
        values = await switch(url, runs, capped, 0.0, hold=True)
    out.append(line("over the cap (queue timeout 0) -> local", values))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=300, help="requests per overhead series")
    parser.add_argument("--latency-ms", type=float, default=20.0, help="the double's first-byte latency")
    parser.add_argument("--fallback-runs", type=int, default=50, help="requests per fallback series")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)  # each fallback logs a warning by design

    async def run() -> list[str]:
        with double("--latency-ms", str(args.latency_ms)) as url:
            lines = await overhead(url, args.runs, args.latency_ms)
        return lines + await fallbacks(args.fallback_runs, args.latency_ms)

    lines = in_service_runtime(run)
    print(
        f"\n== LLM providers: openai SDK against the OpenAI double (own process, first byte after"
        f" {args.latency_ms:g} ms); target overhead <= 2 ms p99, fallback <= 50 ms beyond the failure"
    )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
