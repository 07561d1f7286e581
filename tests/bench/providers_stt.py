"""STT providers benchmark: the Deepgram adapter's own cost, and how fast a chain falls back.

The Deepgram listen double (tests.doubles.deepgram_api) runs on its own event loop in a thread,
with a fixed latency on every message it sends; the real deepgram-sdk client talks to it over
loopback. The local provider is the tone-words stand-in (no model).

- Adapter overhead: one stream per run; the time from pushing a voiced 20 ms frame to the
  first event out of the stream (SpeechStarted), minus the double's configured latency; and
  minus the time the double really held the stream (first audio in -> first message out: its
  latency, its timer's lateness, its own work), which leaves our send path, the websocket both
  ways, the SDK's parsing and our mapping. Per provider: the adapter alone, and through a
  two-provider chain (its pump).
- Fallback switch: from the moment the failed attempt failed (the handshake's 503, the
  first-result deadline, the dropped connection) to the first event of the next provider.

    python -m tests.bench.providers_stt [--runs 300] [--latency-ms 20] [--switches 40]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

from common.providers import EnvKeySource
from stt_svc.chain import ChainRecognizer
from stt_svc.providers.base import RecognitionEvent, RecognitionOptions, Recognizer, RecognizeStream
from stt_svc.providers.deepgram_nova import DeepgramConfig, DeepgramRecognizer
from tests.bench.providers import in_service_runtime
from tests.doubles.deepgram_api import DeepgramListenDouble, ListenFault, ToneWordsRecognizer
from tests.doubles.tone_words import speak

FRAME = speak(["alpha"])[:640]  # 20 ms of the first word's tone
OPTIONS = RecognitionOptions(providers=("deepgram", "local"))


def _pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


@contextlib.contextmanager
def double_in_thread(latency_s: float) -> Iterator[DeepgramListenDouble]:
    """The double on its own loop, so its work is not queued behind the client's."""
    ready = threading.Event()
    box: dict[str, Any] = {}

    async def serve() -> None:
        async with DeepgramListenDouble(latency_s=latency_s, keep_requests=8) as dg:
            box["dg"], box["loop"], box["stop"] = dg, asyncio.get_running_loop(), asyncio.Event()
            ready.set()
            await box["stop"].wait()

    thread = threading.Thread(target=lambda: asyncio.run(serve()), name="deepgram-double", daemon=True)
    thread.start()
    ready.wait(10)
    try:
        yield box["dg"]
    finally:
        box["loop"].call_soon_threadsafe(box["stop"].set)
        thread.join(10)


class Probe:
    """Wraps a provider to time its failures and its streams' first events."""

    def __init__(self, inner: Recognizer) -> None:
        self.inner = inner
        self.name = inner.name
        self.attempts = getattr(inner, "attempts", 1)
        self.failed_at: float | None = None
        self.first_event_at: float | None = None
        self.first_push_at: float | None = None

    async def open(self, options: RecognitionOptions) -> RecognizeStream:
        try:
            return _ProbeStream(self, await self.inner.open(options))
        except Exception:
            self.failed_at = time.perf_counter()
            raise


class _ProbeStream:
    def __init__(self, probe: Probe, inner: RecognizeStream) -> None:
        self.probe = probe
        self.inner = inner
        self.finalize, self.end_input, self.aclose = inner.finalize, inner.end_input, inner.aclose

    async def push_audio(self, pcm16: bytes) -> None:
        if self.probe.first_push_at is None:
            self.probe.first_push_at = time.perf_counter()
        await self.inner.push_audio(pcm16)

    async def events(self) -> AsyncIterator[RecognitionEvent]:
        try:
            async for event in self.inner.events():
                if self.probe.first_event_at is None:
                    self.probe.first_event_at = time.perf_counter()
                yield event
        except Exception:
            self.probe.failed_at = time.perf_counter()
            raise


async def _first_event_ms(recognizer: Recognizer, dg: DeepgramListenDouble) -> tuple[float, float]:
    """(first event latency, the part the double held it) in ms for one new stream."""
    stream = await recognizer.open(OPTIONS)
    try:
        record = dg.requests[-1]
        events = aiter(stream.events())
        t0 = time.perf_counter()
        await stream.push_audio(FRAME)
        await anext(events)
        elapsed = (time.perf_counter() - t0) * 1000
        assert record.first_sent_at is not None and record.first_audio_at is not None
        return elapsed, (record.first_sent_at - record.first_audio_at) * 1000
    finally:
        await stream.aclose()


async def _overhead(dg: DeepgramListenDouble, runs: int, latency_ms: float) -> dict[str, list[float]]:
    """Per provider: first event latency minus the configured latency, and minus the time the
    double actually held the stream (its latency, timer lateness and work: not the adapter's)."""
    direct = DeepgramRecognizer(DeepgramConfig(urls=(dg.url,)), EnvKeySource({}))
    chained = DeepgramRecognizer(DeepgramConfig(urls=(dg.url,)), EnvKeySource({}))
    chain = ChainRecognizer({"deepgram": chained, "local": ToneWordsRecognizer()}, ["deepgram", "local"])
    cases: dict[str, Recognizer] = {"deepgram adapter": direct, "deepgram in a deepgram,local chain": chain}
    out: dict[str, list[float]] = {}
    for _ in range(10):  # warm: imports, the SDK client, connection set-up paths
        for recognizer in cases.values():
            await _first_event_ms(recognizer, dg)
    for _ in range(runs):
        for name, recognizer in cases.items():
            elapsed, held = await _first_event_ms(recognizer, dg)
            out.setdefault(f"{name}, minus configured latency", []).append(elapsed - latency_ms)
            out.setdefault(f"{name}, minus the double's hold", []).append(elapsed - held)
    await direct.aclose()
    await chained.aclose()
    return out


async def _switch(
    dg: DeepgramListenDouble, fault: ListenFault, n: int, deadline_s: float
) -> tuple[list[float], list[float]]:
    """ms from the failure to the local provider's first event, and from the failed attempt's
    first-result deadline (first audio + deadline) to that event, ``n`` times."""
    samples: list[float] = []
    beyond: list[float] = []
    pcm = speak(["alpha", "bravo", "charlie"]) + bytes(32 * 500)
    for _ in range(n):
        dg.faults.append(fault)
        deepgram = Probe(
            DeepgramRecognizer(
                DeepgramConfig(urls=(dg.url,), first_result_timeout_s=deadline_s), EnvKeySource({})
            )
        )
        local = Probe(ToneWordsRecognizer())
        chain = ChainRecognizer({"deepgram": deepgram, "local": local}, ["deepgram", "local"])  # type: ignore[dict-item]
        stream = await chain.open(OPTIONS)
        try:
            for i in range(0, len(pcm), 640):
                await stream.push_audio(pcm[i : i + 640])
                await asyncio.sleep(0)  # let replies in, as paced audio would
            async with asyncio.timeout(10):
                while local.first_event_at is None:  # noqa: ASYNC110 - a timestamp, not a state change
                    await asyncio.sleep(0.001)
            assert deepgram.failed_at is not None
            samples.append((local.first_event_at - deepgram.failed_at) * 1000)
            if deepgram.first_push_at is not None:
                beyond.append((local.first_event_at - deepgram.first_push_at - deadline_s) * 1000)
        finally:
            await stream.aclose()
            await deepgram.inner.aclose()  # type: ignore[attr-defined]
    return samples, beyond


async def _run(runs: int, latency_ms: float, switches: int) -> None:
    print(
        f"\n== STT providers (Deepgram listen double, {latency_ms:g} ms fixed latency; real deepgram-sdk client)"
    )
    logging.getLogger("common.providers").setLevel(logging.ERROR)  # one warning per switch
    sys.setswitchinterval(0.0005)  # as the services run (ServiceSettings.gil_switch_interval_s)
    with double_in_thread(latency_ms / 1000) as dg:
        overhead = await _overhead(dg, runs, latency_ms)
        for name, samples in overhead.items():
            print(
                f"  adapter overhead, {name}: p50 {_pct(samples, 0.5):.2f} ms, p99 {_pct(samples, 0.99):.2f} ms"
                f" ({len(samples)} streams)"
            )
        cases = [
            ("503 at the handshake -> local", ListenFault(status=503), 3.0),
            (
                "first-result deadline (100 ms) -> local, audio replayed",
                ListenFault(first_result_delay_s=5),
                0.1,
            ),
            (
                "dropped mid-stream -> local, uncovered audio replayed",
                ListenFault(disconnect_after_words=1),
                3.0,
            ),
        ]
        for label, fault, deadline in cases:
            samples, beyond = await _switch(dg, fault, switches, deadline)
            print(
                f"  fallback switch, {label}: p50 {_pct(samples, 0.5):.2f} ms, p99 {_pct(samples, 0.99):.2f} ms,"
                f" max {max(samples):.2f} ms ({len(samples)} streams; failure -> next provider's first event)"
            )
            if fault.first_result_delay_s:
                print(
                    f"    beyond the deadline (first audio + {deadline * 1000:.0f} ms -> local's first event):"
                    f" p50 {_pct(beyond, 0.5):.2f} ms, p99 {_pct(beyond, 0.99):.2f} ms, max {max(beyond):.2f} ms"
                )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--switches", type=int, default=40)
    args = parser.parse_args(argv)
    in_service_runtime(lambda: _run(args.runs, args.latency_ms, args.switches))


if __name__ == "__main__":
    main()
