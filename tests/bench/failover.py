"""Failover benchmark: what a mid-call instance failure costs the affected turn.

    python -m tests.bench.failover [--kills 20] [--parallel 4]

Each round is one call through an in-process gateway and doubles on loopback (two STT instances
that transcribe the audio they are sent, tests/doubles/tone_words.py; two LLM instances; one
TTS), four turns:

1. unaffected;
2. the STT instance serving the call is stopped (``server.stop(0)``) at a random point from early
   in the caller's sentence to 200 ms after it: the gateway re-opens recognition on the other
   one and replays the audio;
3. unaffected;
4. the LLM instance serving the turn is stopped before its first token (at a random point of its
   150 ms first-token wait): the turn is retried on the other one.

Turn latency = first agent audio received - end of the caller's speech. The failover gap is the
affected turn's latency minus the mean of the same call's unaffected turns. Words lost/repeated
compare what the caller said with the final transcripts.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time
from collections import Counter
from dataclasses import dataclass, field

import grpc.aio
import numpy as np

from tests.caller import ConverseCaller
from tests.doubles.mesh_services import LlmScript, ScriptedLlm, ToneTts
from tests.doubles.tone_words import WORDS, ToneWordsStt, speak
from tests.integration.failover_harness import MultiMesh, failovers, multi_mesh
from tests.integration.gateway_harness import inline_config

LLM_FIRST_TOKEN_MS = 150
SENTENCE = 6  # words per caller turn (1.2 s of speech)


@dataclass
class Round:
    latency_ms: dict[int, float] = field(default_factory=dict)
    llm_lost_ms: float = 0.0  # how long the LLM stream had run when its instance was gone
    stt_kill_at: float = 0.5  # where in the sentence the STT instance died (1.0 = its end)
    said: list[str] = field(default_factory=list)
    heard: list[str] = field(default_factory=list)
    error: str = ""


async def _kill_stt(mesh: MultiMesh) -> float:
    await mesh.serving("stt").kill()
    return 0.0


async def _kill_llm_while_streaming(mesh: MultiMesh, after_s: float) -> float:
    """Stop the LLM instance ``after_s`` into its stream (before its first token); returns how
    long the stream had run when the instance was gone (the stop itself takes a moment)."""
    while True:
        busy = [i for i in mesh.instances["llm"] if i.servicer.streams.open and not i.stopped]
        if busy:
            opened = time.monotonic()
            await asyncio.sleep(after_s)
            await busy[0].kill()
            return (time.monotonic() - opened) * 1000.0
        await asyncio.sleep(0.002)


async def _turn(
    caller: ConverseCaller,
    turn: int,
    words: list[str],
    mesh: MultiMesh,
    kind: str,
    kill_at: float,
    kill_after_s: float,
) -> tuple[float, float]:
    pcm = speak(words)
    killer: asyncio.Task[float] | None = None
    if kind == "stt":
        # Anywhere from early in the sentence to 200 ms into the silence after it.
        cut = int(len(pcm) * kill_at) // 640 * 640
        tail = b"\0" * (640 * 10)
        # The stop runs beside the caller, who goes on talking in real time.
        if cut <= len(pcm):
            await caller.send_pcm(pcm[:cut])
            killer = asyncio.ensure_future(_kill_stt(mesh))
            await caller.send_pcm(pcm[cut:])
            speech_end = time.monotonic() - 0.04  # speak() ends each word with a 40 ms gap
        else:
            await caller.send_pcm(pcm)
            speech_end = time.monotonic() - 0.04
            await caller.send_pcm(tail[: cut - len(pcm)])
            killer = asyncio.ensure_future(_kill_stt(mesh))
    else:
        if kind == "llm":
            killer = asyncio.ensure_future(_kill_llm_while_streaming(mesh, kill_after_s))
        await caller.send_pcm(pcm)
        speech_end = time.monotonic() - 0.04
    await caller.wait_for(caller.turn_done(turn), timeout=15)
    lost_ms = 0.0
    if killer is not None:
        lost_ms = await asyncio.wait_for(killer, 5)
    first_audio = min(r.at for r in caller.of("audio") if r.at > speech_end)
    return (first_audio - speech_end) * 1000.0, lost_ms


async def one_round(index: int) -> Round:
    result = Round()
    rng = np.random.default_rng(index)
    llm = [ScriptedLlm(LlmScript(first_token_delay_s=LLM_FIRST_TOKEN_MS / 1000)) for _ in range(2)]
    try:
        async with (
            multi_mesh([ToneWordsStt(), ToneWordsStt()], llm, [ToneTts()]) as mesh,
            grpc.aio.insecure_channel(mesh.address) as ch,
        ):
            kill_after_s = float(rng.uniform(0, 0.6 * LLM_FIRST_TOKEN_MS)) / 1000
            result.stt_kill_at = float(rng.uniform(0.1, 1.15))
            async with ConverseCaller(ch, inline_config(end_of_turn_silence_ms=500)) as caller:
                await caller.silence(200)
                for turn, kind in enumerate(("none", "stt", "none", "llm"), start=1):
                    words = [WORDS[int(i)] for i in rng.integers(0, len(WORDS), SENTENCE)]
                    words = [w for j, w in enumerate(words) if j == 0 or w != words[j - 1]]
                    result.said += words
                    result.latency_ms[turn], lost_ms = await _turn(
                        caller, turn, words, mesh, kind, result.stt_kill_at, kill_after_s
                    )
                    if kind == "llm":
                        result.llm_lost_ms = lost_ms
                    await caller.silence(300)
                await caller.hangup()
            result.heard = [
                w
                for r in caller.of("caller_transcript")
                if r.msg.caller_transcript.is_final
                for w in r.msg.caller_transcript.text.split()
            ]
    except (AssertionError, grpc.aio.AioRpcError, TimeoutError) as e:
        result.error = str(e)[:200]
    return result


async def run(kills: int, parallel: int) -> list[Round]:
    limit = asyncio.Semaphore(parallel)

    async def limited(i: int) -> Round:
        async with limit:
            return await one_round(i)

    return list(await asyncio.gather(*(limited(i) for i in range(kills))))


def _pct(values: list[float], p: float) -> float:
    return float(np.percentile(values, p)) if values else float("nan")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--kills", type=int, default=20, help="calls, each with one STT and one LLM kill")
    parser.add_argument("--parallel", type=int, default=4, help="calls at a time")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    before = {s: failovers(s) for s in ("stt", "llm")}
    rounds = asyncio.run(run(args.kills, args.parallel))
    done = [r for r in rounds if not r.error]
    unaffected = [(r.latency_ms[1] + r.latency_ms[3]) / 2 for r in done]
    stt_gap = [r.latency_ms[2] - base for r, base in zip(done, unaffected, strict=True)]
    llm_gap = [r.latency_ms[4] - base for r, base in zip(done, unaffected, strict=True)]
    # The LLM's time on the dead instance is lost whatever the gateway does; the rest is failover.
    llm_overhead = [gap - r.llm_lost_ms for r, gap in zip(done, llm_gap, strict=True)]
    said, heard = Counter(w for r in done for w in r.said), Counter(w for r in done for w in r.heard)
    lost, repeated = sum((said - heard).values()), sum((heard - said).values())
    in_order = sum(r.heard == r.said for r in done)
    print(
        f"\n== Failover: {len(done)}/{len(rounds)} calls, each with its STT instance stopped during or just after a sentence"
        f" and its LLM instance stopped before the first token (doubles, in-process gateway)"
    )
    for r in rounds:
        if r.error:
            print(f"  call failed: {r.error}")
    print(
        f"  {'unaffected turn latency':<43} p50 {_pct(unaffected, 50):6.1f} ms  p99 {_pct(unaffected, 99):6.1f} ms"
    )
    for name, gap in (
        ("STT failover adds to the turn", stt_gap),
        ("LLM retry adds to the turn", llm_gap),
        ("LLM retry minus time spent on the dead LLM", llm_overhead),
    ):
        print(
            f"  {name:<43} p50 {_pct(gap, 50):6.1f} ms  p99 {_pct(gap, 99):6.1f} ms"
            f"  max {max(gap, default=float('nan')):6.1f} ms"
        )
    print(
        f"  words said {sum(said.values())}, lost {lost}, repeated {repeated};"
        f" transcripts in order and complete in {in_order}/{len(done)} calls"
    )
    print(
        "  failovers counted: "
        + ", ".join(f"{s}={failovers(s) - before[s]:.0f}" for s in ("stt", "llm"))
        + "  (target: failover adds <= 300 ms, loses no words)"
    )


if __name__ == "__main__":
    main()
