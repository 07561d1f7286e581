"""TTS provider benchmark: what the Deepgram and ElevenLabs adapters add, and how fast the chain
switches when a provider fails.

    python -m tests.bench.providers_tts [--runs 200] [--latency-ms 50]

Against the loopback doubles (tests/doubles/deepgram_speak.py, elevenlabs_api.py) with a fixed
first-audio latency, through the chain exactly as tts_svc streams use it (``open_session`` ->
``synthesize_stream``):

- adapter overhead = first audio of a piece - the double's configured latency. For Deepgram
  it is shown for a stream's first piece on a new websocket (idle pool off), on an idle socket
  left by the previous stream, and for a later piece of the stream; ElevenLabs makes one
  request per piece over a kept-alive connection. It includes the double's own work and
  loopback, so it is an upper bound.
  The doubles run on their own thread and event loop, so their work is not charged to the
  adapter's loop; "floor" rows time a bare client (websockets / httpx, no SDK, no adapter)
  against the same doubles: what the adapters add is the difference.
- fallback switch time = the next provider's first audio - the moment the failed attempt
  failed (a refused handshake / HTTP 503, or the first-audio deadline expiring on a provider
  that stalls), with the local engine (instant here) as the next link.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import threading
import time
from collections.abc import AsyncGenerator, Iterator
from typing import Any

import httpx
import numpy as np
import websockets.asyncio.client

from common.providers import EnvKeySource
from tests.bench.providers import in_service_runtime
from tests.doubles import deepgram_speak, elevenlabs_api
from tests.doubles.deepgram_speak import DeepgramSpeakDouble, text_audio
from tests.doubles.elevenlabs_api import ElevenLabsDouble
from tts_svc.chain import ChainSynthesizer
from tts_svc.providers.base import SynthesisOptions, SynthesisSession
from tts_svc.providers.cloud import Deadlines
from tts_svc.providers.deepgram_aura import DeepgramAura
from tts_svc.providers.elevenlabs_tts import ElevenLabsTts

RATE = 16000
TEXT = "This is the sentence every run speaks."
DEADLINE_S = 0.1  # first-audio deadline in the stall scenario
OPTIONS = SynthesisOptions(sample_rate=RATE, tenant_id="bench")
ENV = {"DEEPGRAM_API_KEY": "bench-dg", "ELEVENLABS_API_KEY": "bench-el"}


class Timed:
    """Wraps a provider: records when its sessions fail, so a switch can be timed from there."""

    def __init__(self, provider: Any) -> None:
        self.provider = self._provider = provider
        self.name = provider.name
        self.sample_rate = provider.sample_rate
        self.voices = provider.voices
        self.failed_at = 0.0

    def validate(self, options: SynthesisOptions) -> None:
        self._provider.validate(options)

    def open_session(self, options: SynthesisOptions) -> _TimedSession:
        return _TimedSession(self, self._provider.open_session(options))

    async def synthesize(self, text: str, options: SynthesisOptions) -> bytes:
        raise NotImplementedError


class _TimedSession:
    def __init__(self, owner: Timed, session: SynthesisSession) -> None:
        self._owner, self._session = owner, session
        self.sample_rate = session.sample_rate

    async def synthesize_stream(self, text: str) -> AsyncGenerator[bytes, None]:
        try:
            async with contextlib.aclosing(self._session.synthesize_stream(text)) as chunks:
                async for pcm in chunks:
                    yield pcm
        except Exception:
            self._owner.failed_at = time.perf_counter()
            raise

    async def aclose(self) -> None:
        await self._session.aclose()


class InstantLocal:
    name, sample_rate, voices = "instant", RATE, ("local",)

    async def synthesize(self, text: str, options: SynthesisOptions) -> bytes:
        return text_audio(text, RATE)


async def first_audio(session: SynthesisSession, text: str = TEXT) -> float:
    """Seconds to the first chunk of one piece; reads the piece to its end."""
    started, first = time.perf_counter(), 0.0
    async with contextlib.aclosing(session.synthesize_stream(text)) as chunks:
        async for _ in chunks:
            first = first or time.perf_counter()
    return first - started


async def overhead(chain: ChainSynthesizer, runs: int, latency_s: float, pieces: int) -> list[list[float]]:
    """Per piece position (0 = a stream's first piece), first audio - latency in ms."""
    out: list[list[float]] = [[] for _ in range(pieces)]
    for _ in range(runs):
        session = chain.open_session(OPTIONS)
        try:
            for i in range(pieces):
                out[i].append((await first_audio(session) - latency_s) * 1000)
        finally:
            await session.aclose()
    return out


def stats(ms: list[float]) -> str:
    a = np.asarray(ms)
    return f"p50 {np.percentile(a, 50):6.2f}  p99 {np.percentile(a, 99):6.2f}  max {a.max():6.2f} ms (n={len(a)})"


@contextlib.contextmanager
def doubles_on_a_thread(latency_s: float) -> Iterator[tuple[DeepgramSpeakDouble, ElevenLabsDouble]]:
    """Both doubles served from another thread's event loop (faults are deques: thread-safe)."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="bench-doubles", daemon=True)
    thread.start()
    dg, el = DeepgramSpeakDouble(latency_s=latency_s), ElevenLabsDouble(latency_s=latency_s)
    try:
        asyncio.run_coroutine_threadsafe(dg.__aenter__(), loop).result()
        asyncio.run_coroutine_threadsafe(el.__aenter__(), loop).result()
        yield dg, el
    finally:
        asyncio.run_coroutine_threadsafe(dg.__aexit__(None, None, None), loop).result()
        asyncio.run_coroutine_threadsafe(el.__aexit__(None, None, None), loop).result()
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()


async def deepgram_floor(url: str, runs: int, latency_s: float) -> list[float]:
    """A bare websocket client on one reused socket: Speak + Flush -> first binary frame."""
    out = []
    query = "model=aura-2-thalia-en&encoding=linear16&sample_rate=16000"
    async with websockets.asyncio.client.connect(
        f"{url}/v1/speak?{query}", additional_headers={"Authorization": "Token bench-dg"}
    ) as ws:
        for _ in range(runs):
            started, first = time.perf_counter(), 0.0
            await ws.send(json.dumps({"type": "Speak", "text": TEXT}))
            await ws.send(json.dumps({"type": "Flush"}))
            while True:
                message = await ws.recv()
                if isinstance(message, bytes):
                    first = first or time.perf_counter()
                elif json.loads(message).get("type") == "Flushed":
                    break
            out.append((first - started - latency_s) * 1000)
    return out


async def elevenlabs_floor(url: str, runs: int, latency_s: float) -> list[float]:
    """A bare httpx client (kept-alive connection): POST -> first body bytes."""
    out = []
    async with httpx.AsyncClient(base_url=url) as http:
        for _ in range(runs):
            started, first = time.perf_counter(), 0.0
            async with http.stream(
                "POST",
                "/v1/text-to-speech/JBFqnCBsd6RMkjVDRZzb/stream",
                params={"output_format": f"pcm_{RATE}"},
                json={"text": TEXT, "model_id": "eleven_flash_v2_5"},
                headers={"xi-api-key": "bench-el"},
            ) as response:
                async for _ in response.aiter_raw():
                    first = first or time.perf_counter()
            out.append((first - started - latency_s) * 1000)
    return out


async def run(dg: DeepgramSpeakDouble, el: ElevenLabsDouble, runs: int, latency_s: float) -> list[str]:
    deadlines = Deadlines(connect_s=1.0, first_audio_s=DEADLINE_S, idle_s=1.0, close_s=0.5)
    deepgram = DeepgramAura(base_url=dg.url, deadlines=deadlines, keys=EnvKeySource(ENV))
    eleven = ElevenLabsTts(base_url=el.url, deadlines=deadlines, keys=EnvKeySource(ENV))
    try:
        fresh = DeepgramAura(base_url=dg.url, deadlines=deadlines, keys=EnvKeySource(ENV), max_idle=0)
        try:
            new_socket = await overhead(
                ChainSynthesizer({"deepgram": fresh}, ["deepgram"]), runs, latency_s, 1
            )
        finally:
            await fresh.aclose()
        d = await overhead(ChainSynthesizer({"deepgram": deepgram}, ["deepgram"]), runs, latency_s, 2)
        dg_floor = await deepgram_floor(dg.url, runs, latency_s)
        e = await overhead(ChainSynthesizer({"elevenlabs": eleven}, ["elevenlabs"]), runs, latency_s, 1)
        el_floor = await elevenlabs_floor(el.url, runs, latency_s)
        lines = [
            f"  deepgram   1st piece, new socket  overhead {stats(new_socket[0])}",
            f"  deepgram   1st piece, idle socket overhead {stats(d[0])}",
            f"  deepgram   2nd piece, same socket overhead {stats(d[1])}",
            f"  deepgram   bare websocket client  floor    {stats(dg_floor)}",
            f"  elevenlabs piece (HTTP stream)    overhead {stats(e[0])}",
            f"  elevenlabs bare httpx client      floor    {stats(el_floor)}",
        ]
        for name, provider, double, faults in [
            ("deepgram", deepgram, dg, deepgram_speak),
            ("elevenlabs", eleven, el, elevenlabs_api),
        ]:
            lines += await fallbacks(name, provider, double, faults, max(50, runs // 4))
        return lines
    finally:
        await deepgram.aclose()
        await eleven.aclose()


async def fallbacks(name: str, provider: Any, double: Any, faults: Any, runs: int) -> list[str]:
    timed = Timed(provider)
    chain = ChainSynthesizer({name: timed, "local": InstantLocal()}, [name, "local"])  # type: ignore[dict-item]
    stall = "first_audio_delay_s" if faults is deepgram_speak else "first_byte_delay_s"
    lines = []
    for what, fault in [
        ("HTTP 503", faults.Fault(status=503)),
        (f"stall ({DEADLINE_S * 1000:.0f} ms deadline)", faults.Fault(**{stall: 5.0})),
    ]:
        ms, total = await switches(chain, timed, double, fault, runs)
        lines.append(f"  {name:10} fallback after {what:24} switch {stats(ms)}")
        if "stall" in what:  # from the start: connect (Deepgram) + deadline + switch
            beyond = [t - DEADLINE_S * 1000 for t in total]
            lines.append(f"  {name:10} {'start -> audio, minus deadline':39} {stats(beyond)}")
    return lines


async def switches(
    chain: ChainSynthesizer, timed: Timed, double: Any, fault: Any, runs: int
) -> tuple[list[float], list[float]]:
    """(failure -> next link's first audio, start -> next link's first audio) in ms."""
    switch, total = [], []
    idle = getattr(timed.provider, "idle", None)
    for _ in range(runs):
        if idle is not None:
            await idle.aclose()  # a pooled socket would skip the handshake, hence the fault
        double.faults.append(fault)
        session = chain.open_session(OPTIONS)
        try:
            started = time.perf_counter()
            async with contextlib.aclosing(session.synthesize_stream(TEXT)) as chunks:
                async for _ in chunks:
                    now = time.perf_counter()
                    if timed.failed_at < started:
                        raise RuntimeError(f"{timed.name}: the injected fault was not met; nothing to time")
                    switch.append((now - timed.failed_at) * 1000)
                    total.append((now - started) * 1000)
                    break
        finally:
            await session.aclose()
    return switch, total


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=200, help="pieces per measurement (>= 200 for a p99)")
    parser.add_argument("--latency-ms", type=float, default=50.0, help="the doubles' first-audio latency")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    with doubles_on_a_thread(args.latency_ms / 1000) as (dg, el):
        lines = in_service_runtime(lambda: run(dg, el, args.runs, args.latency_ms / 1000))
    print(
        f"\n== TTS providers: adapter overhead over the doubles' {args.latency_ms:.0f} ms first-audio latency,"
        " and fallback switch time to the next provider (real SDK clients, loopback doubles)"
    )
    print("\n".join(lines))
    print("  targets: adapter overhead <= 2 ms p99; fallback <= 50 ms beyond the failed attempt's deadline")


if __name__ == "__main__":
    main()
