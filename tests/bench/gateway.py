"""Gateway load benchmark: N concurrent Converse calls through the whole mesh.

Every service runs as its own process with a zero-cost engine of fixed latency (tests/fakes),
so what is measured is the mesh itself: gRPC hops, the gateway's call logic and pacing.

    python -m tests.bench.gateway [--calls 10,50,100,200] [--turns 3]

Mesh-added latency per turn = (first agent audio frame received - last caller speech frame
sent) - (configured end-of-turn silence + LLM first-token latency + TTS first-audio latency).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import time
from dataclasses import dataclass, field

import grpc.aio
import numpy as np
import psutil

from common.gen.voiceai.common.v1 import audio_pb2
from common.gen.voiceai.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from tests.bench import procs

END_OF_TURN_SILENCE_MS = 500
STT_FINAL_MS = 0
LLM_FIRST_TOKEN_MS = 100
TTS_FIRST_AUDIO_MS = 50
CONFIGURED_MS = END_OF_TURN_SILENCE_MS + STT_FINAL_MS + LLM_FIRST_TOKEN_MS + TTS_FIRST_AUDIO_MS
RATE = 16000
FRAME = RATE * 20 // 1000 * 2
SPEECH_MS = 1000

_t = np.arange(RATE * SPEECH_MS // 1000) / RATE
SPEECH = (6000 * np.sin(2 * np.pi * 220 * _t)).astype(np.int16).tobytes()
SILENCE_FRAME = b"\x00" * FRAME
SPEECH_FRAMES = [SPEECH[i : i + FRAME] for i in range(0, len(SPEECH), FRAME)]


def _config() -> gateway_pb2.ConverseRequest:
    return gateway_pb2.ConverseRequest(
        config=gateway_pb2.CallConfig(
            agent=gateway_pb2.AgentConfig(
                system_prompt="bench",
                turn_taking=gateway_pb2.TurnTaking(end_of_turn_silence_ms=END_OF_TURN_SILENCE_MS),
            ),
            caller_audio_format=audio_pb2.AudioFormat(
                encoding=audio_pb2.AUDIO_ENCODING_LINEAR16, sample_rate_hertz=RATE, channels=1
            ),
        )
    )


@dataclass
class CallStats:
    added_ms: list[float] = field(default_factory=list)
    gaps_ms: list[float] = field(default_factory=list)
    stages: list[tuple[int, int, int, int, int]] = field(default_factory=list)
    turns_done: int = 0
    error: str = ""


async def _call(
    stub: gateway_pb2_grpc.CallGatewayServiceStub, turns: int, idx: int, stats: CallStats
) -> None:
    call = stub.Converse(metadata=(("x-tenant-id", f"bench-{idx % 10}"),))
    await call.write(_config())
    state = {"turn_done": 0, "first_audio": None, "last_audio": 0.0}

    async def read() -> None:
        async for msg in call:
            kind = msg.WhichOneof("event")
            now = time.monotonic()
            if kind == "audio":
                if state["first_audio"] is None:
                    state["first_audio"] = now
                elif now - state["last_audio"] < 0.2:  # same utterance: a pacing gap
                    stats.gaps_ms.append((now - state["last_audio"]) * 1000)
                state["last_audio"] = now
            elif kind == "turn_metrics":
                m = msg.turn_metrics
                state["turn_done"] = m.turn
                stats.stages.append(
                    (
                        m.stt_final_ms,
                        m.end_of_turn_ms,
                        m.llm_first_token_ms,
                        m.tts_first_audio_ms,
                        m.first_audio_out_ms,
                    )
                )

    reader = asyncio.get_running_loop().create_task(read())
    next_at = time.monotonic() + (idx % 50) * 0.0004  # spread callers within a frame period
    try:
        for turn in range(1, turns + 1):
            for frame in SPEECH_FRAMES:
                next_at += 0.02
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))
                await call.write(gateway_pb2.ConverseRequest(audio=frame))
            speech_end = time.monotonic()
            state["first_audio"] = None
            deadline = speech_end + 15
            while state["turn_done"] < turn and time.monotonic() < deadline:
                next_at += 0.02
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))
                await call.write(gateway_pb2.ConverseRequest(audio=SILENCE_FRAME))
            if state["turn_done"] < turn:
                stats.error = f"turn {turn} never finished"
                return
            if state["first_audio"] is not None:
                stats.added_ms.append((state["first_audio"] - speech_end) * 1000 - CONFIGURED_MS)
            stats.turns_done += 1
        await call.write(gateway_pb2.ConverseRequest(hangup=gateway_pb2.Hangup()))
        await call.done_writing()
        await asyncio.wait_for(reader, 5)
    except (grpc.aio.AioRpcError, TimeoutError) as e:
        stats.error = str(e)[:200]
    finally:
        reader.cancel()
        call.cancel()


def _pct(values: list[float], p: float) -> float:
    return float(np.percentile(values, p)) if values else float("nan")


async def run_load(address: str, n: int, turns: int, mesh: list[procs.Proc]) -> dict[str, float]:
    async with grpc.aio.insecure_channel(address) as ch:
        stub = gateway_pb2_grpc.CallGatewayServiceStub(ch)
        gw = next(p for p in mesh if p.name == "gateway")
        rss0 = gw.rss_mb()
        cpu0 = {p.name: p.cpu_seconds() for p in mesh}
        me = psutil.Process()
        own0 = sum(me.cpu_times()[:2])
        t0 = time.monotonic()
        stats = [CallStats() for _ in range(n)]
        rss_peak = rss0

        async def sample_rss() -> None:
            nonlocal rss_peak
            while True:
                await asyncio.sleep(0.5)
                rss_peak = max(rss_peak, gw.rss_mb())

        sampler = asyncio.get_running_loop().create_task(sample_rss())
        await asyncio.gather(*(_call(stub, turns, i, s) for i, s in enumerate(stats)))
        sampler.cancel()
        elapsed = time.monotonic() - t0
        cpu_by = {p.name: p.cpu_seconds() - cpu0[p.name] for p in mesh}
        loadgen_cores = (sum(me.cpu_times()[:2]) - own0) / elapsed
        cpu = sum(cpu_by.values())
    added = [v for s in stats for v in s.added_ms]
    gaps = [v for s in stats for v in s.gaps_ms]
    errors = [s.error for s in stats if s.error]
    stages = np.array([st for s in stats for st in s.stages], dtype=float)
    medians = np.median(stages, axis=0) if len(stages) else [float("nan")] * 5
    return {
        "calls": n,
        "turns": sum(s.turns_done for s in stats),
        "errors": len(errors),
        "added_p50": _pct(added, 50),
        "added_p95": _pct(added, 95),
        "added_p99": _pct(added, 99),
        "cpu_s_per_call_min": cpu / (n * elapsed / 60.0),
        "rss_mb_per_call": (rss_peak - rss0) / n,
        "jitter_p99": _pct([abs(g - 20.0) for g in gaps], 99),
        "stages": " / ".join(f"{v:.0f}" for v in medians),
        "cpu_split": " ".join(f"{k}={v / (n * elapsed / 60.0):.3f}" for k, v in cpu_by.items())
        + f"; load generator used {loadgen_cores:.2f} cores, mesh {cpu / elapsed:.2f}",
    }


async def leak_check(address: str, gw: procs.Proc) -> tuple[float, float]:
    """RSS of the gateway after 100 and after 1,000 short sequential calls."""

    async def short_call(stub: gateway_pb2_grpc.CallGatewayServiceStub) -> None:
        call = stub.Converse(metadata=(("x-tenant-id", "bench-leak"),))
        await call.write(_config())
        for _ in range(5):
            await call.write(gateway_pb2.ConverseRequest(audio=SILENCE_FRAME))
        await call.write(gateway_pb2.ConverseRequest(hangup=gateway_pb2.Hangup()))
        await call.done_writing()
        async for _ in call:
            pass

    async with grpc.aio.insecure_channel(address) as ch:
        stub = gateway_pb2_grpc.CallGatewayServiceStub(ch)
        after: dict[int, float] = {}
        for i in range(1, 1001):
            await short_call(stub)
            if i in (100, 1000):
                await asyncio.sleep(0.3)
                after[i] = gw.rss_mb()
    return after[100], after[1000]


def _run(coro):  # type: ignore[no-untyped-def]
    import uvloop  # the load generator must not be the bottleneck

    return uvloop.run(coro)


def fake_env() -> dict[str, str]:
    return {
        "VOICEAI_STT_ENGINE": "tests.fakes.stt:ZeroCostRecognizer",
        "VOICEAI_LLM_ENGINE": "tests.fakes.llm:ZeroCostChatModel",
        "VOICEAI_TTS_ENGINE": "tests.fakes.tts:ZeroCostSynthesizer",
        "VOICEAI_FAKE_STT_FINAL_MS": str(STT_FINAL_MS),
        "VOICEAI_FAKE_LLM_FIRST_TOKEN_MS": str(LLM_FIRST_TOKEN_MS),
        "VOICEAI_FAKE_TTS_FIRST_AUDIO_MS": str(TTS_FIRST_AUDIO_MS),
        "VOICEAI_USE_UVLOOP": "1",
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", default="10,50,100,200")
    parser.add_argument("--turns", type=int, default=3)
    parser.add_argument("--no-leak-check", action="store_true")
    args = parser.parse_args(argv)
    env = fake_env()
    gc.freeze()
    with (
        procs.start("stt", "stt_svc", env) as stt,
        procs.start("llm", "llm_svc", env) as llm,
        procs.start("tts", "tts_svc", env) as tts,
    ):
        gw_env = {
            **env,
            "VOICEAI_STT_ADDRESSES": stt.address,
            "VOICEAI_LLM_ADDRESSES": llm.address,
            "VOICEAI_TTS_ADDRESSES": tts.address,
        }
        with procs.start("gateway", "gateway", gw_env) as gw:
            mesh = [stt, llm, tts, gw]
            print(
                f"\n== Gateway load: whole mesh, zero-cost engines (end-of-turn silence {END_OF_TURN_SILENCE_MS} ms,"
                f" STT final {STT_FINAL_MS} ms, LLM first token {LLM_FIRST_TOKEN_MS} ms,"
                f" TTS first audio {TTS_FIRST_AUDIO_MS} ms; {args.turns} turns per call)"
            )
            header = f"{'calls':>6} {'turns':>6} {'err':>4} {'added p50':>10} {'p95':>7} {'p99':>7} {'CPU s/call-min':>15} {'RSS MB/call':>12} {'jitter p99':>11}   gateway stage medians (ms after speech end): stt_final / end_of_turn / llm_first_token / tts_first_audio / first_audio_out"
            print(header)
            for n in (int(x) for x in args.calls.split(",")):
                r = _run(run_load(gw.address, n, args.turns, mesh))
                print(
                    f"{n:>6} {r['turns']:>6.0f} {r['errors']:>4.0f} {r['added_p50']:>8.1f}ms {r['added_p95']:>5.1f}ms"
                    f" {r['added_p99']:>5.1f}ms {r['cpu_s_per_call_min']:>15.3f} {r['rss_mb_per_call']:>12.3f}"
                    f" {r['jitter_p99']:>9.1f}ms   {r['stages']}   [CPU s/call-min: {r['cpu_split']}]"
                )
            if not args.no_leak_check:
                rss100, rss1000 = _run(leak_check(gw.address, gw))
                print(
                    f"gateway RSS after 100 short calls: {rss100:.1f} MB; after 1,000: {rss1000:.1f} MB ({rss1000 - rss100:+.1f} MB)"
                )
    print(
        "  (mesh-added latency = end to end minus the configured latencies above; CPU is all four mesh processes)"
    )


if __name__ == "__main__":
    main()
