"""TTS provider benchmark: what the Deepgram and ElevenLabs adapters add, and how fast the chain
switches when a provider fails.

    python -m tests.bench.providers_tts [--runs 200] [--latency-ms 50]

Against the loopback doubles (tests/doubles/deepgram_speak.py, elevenlabs_api.py) with a fixed
first-audio latency, through the chain exactly as tts_svc streams use it (``open_session`` ->
``synthesize_stream``):

- adapter overhead = first audio of a piece - the double's configured latency. For Deepgram
  it is shown for a stream's first piece (the websocket is opened then) and for later pieces
  (the stream's socket is reused); ElevenLabs makes one request per piece over a kept-alive
  connection. It includes the double's own work and loopback, so it is an upper bound.
- fallback switch time = the next provider's first audio - the moment the failed attempt
  failed (a refused handshake / HTTP 503, or the first-audio deadline expiring on a provider
  that stalls), with the local engine (instant here) as the next link.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator
from typing import Any

import numpy as np

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
        self._provider = provider
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


async def run(runs: int, latency_s: float) -> list[str]:
    lines = []
    deadlines = Deadlines(connect_s=1.0, first_audio_s=DEADLINE_S, idle_s=1.0, close_s=0.5)
    async with DeepgramSpeakDouble(latency_s=latency_s) as dg, ElevenLabsDouble(latency_s=latency_s) as el:
        deepgram = DeepgramAura(base_url=dg.url, deadlines=deadlines, environ=ENV)
        eleven = ElevenLabsTts(base_url=el.url, deadlines=deadlines, environ=ENV)
        try:
            d = await overhead(ChainSynthesizer({"deepgram": deepgram}, ["deepgram"]), runs, latency_s, 2)
            lines.append(f"  deepgram   first piece (connect)  overhead {stats(d[0])}")
            lines.append(f"  deepgram   next piece (reused)    overhead {stats(d[1])}")
            e = await overhead(ChainSynthesizer({"elevenlabs": eleven}, ["elevenlabs"]), runs, latency_s, 1)
            lines.append(f"  elevenlabs piece (HTTP stream)    overhead {stats(e[0])}")
            for name, provider, double, faults in [
                ("deepgram", deepgram, dg, deepgram_speak),
                ("elevenlabs", eleven, el, elevenlabs_api),
            ]:
                timed = Timed(provider)
                chain = ChainSynthesizer({name: timed, "local": InstantLocal()}, [name, "local"])  # type: ignore[dict-item]
                for what, fault in [
                    ("HTTP 503", faults.Fault(status=503)),
                    (
                        f"stall ({DEADLINE_S * 1000:.0f} ms deadline)",
                        faults.Fault(**{_stall_field(faults): 5.0}),  # type: ignore[arg-type]
                    ),
                ]:
                    ms, total = await switches(chain, timed, double, fault, max(20, runs // 4))
                    lines.append(f"  {name:10} fallback after {what:24} switch {stats(ms)}")
                    if "stall" in what:  # the whole wait, connect included, past the deadline
                        beyond = [t - DEADLINE_S * 1000 for t in total]
                        lines.append(f"  {name:10} {'':15}{'':24} beyond deadline {stats(beyond)}")
        finally:
            await deepgram.aclose()
            await eleven.aclose()
    return lines


def _stall_field(faults: Any) -> str:
    return "first_audio_delay_s" if faults is deepgram_speak else "first_byte_delay_s"


async def switches(
    chain: ChainSynthesizer, timed: Timed, double: Any, fault: Any, runs: int
) -> tuple[list[float], list[float]]:
    """(failure -> next link's first audio, start -> next link's first audio) in ms."""
    switch, total = [], []
    for _ in range(runs):
        double.faults.append(fault)
        session = chain.open_session(OPTIONS)
        try:
            started = time.perf_counter()
            async with contextlib.aclosing(session.synthesize_stream(TEXT)) as chunks:
                async for _ in chunks:
                    now = time.perf_counter()
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
    lines = asyncio.run(run(args.runs, args.latency_ms / 1000))
    print(
        f"\n== TTS providers: adapter overhead over the doubles' {args.latency_ms:.0f} ms first-audio latency,"
        " and fallback switch time to the next provider (real SDK clients, loopback doubles)"
    )
    print("\n".join(lines))
    print("  targets: adapter overhead <= 2 ms p99; fallback <= 50 ms beyond the failed attempt's deadline")


if __name__ == "__main__":
    main()
