"""Gateway load benchmark: N concurrent Converse calls through the whole mesh.

Every service runs as its own process with a zero-cost engine of fixed latency (tests/fakes),
so what is measured is the mesh itself: gRPC hops, the gateway's call logic and pacing. The
callers run in separate processes (tests/bench/loadgen.py), at most ``--calls-per-process``
each.

    python -m tests.bench.gateway [--calls 10,50,100,200] [--turns 5] [--sync]

Mesh-added latency per turn = (first agent audio frame received - last caller speech frame
handed to gRPC) - (configured end-of-turn silence + STT final + LLM first-token + TTS
first-audio latencies). Only turns that start while all N calls are connected count.

Arrivals. By default calls dial at random moments over ``--stagger`` seconds and speak turns of
random length (0.6-1.4 s) after random pauses (0.2-1.0 s), so turns arrive spread out as they do
on a real line: N concurrent calls, not N simultaneous turns. ``--sync`` is the thundering herd
instead: every call dials within one frame period and speaks 1 s turns with no pause, so all N
turns end within 20 ms of each other, every turn (and the worst case for per-turn work).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from common.dev_ca import DevPki, ensure_dev_pki
from common.tls import TlsConfig, TlsSettings, edge_channel
from tests.bench import procs
from tests.bench.loadgen import CallPlan
from tests.bench.otlp_receiver import OtlpReceiver
from tests.credentials import bearer  # fixes the dev signing key every mesh process verifies with

END_OF_TURN_SILENCE_MS = 500
STT_FINAL_MS = 0
LLM_FIRST_TOKEN_MS = 100
TTS_FIRST_AUDIO_MS = 50
CONFIGURED_MS = END_OF_TURN_SILENCE_MS + STT_FINAL_MS + LLM_FIRST_TOKEN_MS + TTS_FIRST_AUDIO_MS


def plans_for(n: int, turns: int, *, sync: bool, stagger_s: float, seed: int) -> list[CallPlan]:
    rng = random.Random(seed * 1000 + n)
    plans = []
    for i in range(n):
        tenant = f"bench-{i % 10}"
        auth = bearer(tenant)[1]
        if sync:
            plans.append(CallPlan((i % 50) * 0.0004, [50] * turns, [0] * turns, tenant, auth))
        else:
            plans.append(
                CallPlan(
                    rng.uniform(0.0, stagger_s),
                    [rng.randint(30, 70) for _ in range(turns)],
                    [rng.randint(10, 50) for _ in range(turns)],
                    tenant,
                    auth,
                )
            )
    return plans


def _pct(values: list[float] | np.ndarray, p: float) -> float:
    return float(np.percentile(values, p)) if len(values) else float("nan")


def spawn_loadgen(
    address: str,
    start_at: float,
    plans: list[CallPlan],
    tls_env: dict[str, str] | None = None,
    channel_per_call: bool = False,
) -> subprocess.Popen[bytes]:
    popen = subprocess.Popen(
        [sys.executable, "-m", "tests.bench.loadgen"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": procs.ROOT, **(tls_env or {})},
        cwd=procs.ROOT,
    )
    spec = {
        "address": address,
        "start_at": start_at,
        "end_of_turn_silence_ms": END_OF_TURN_SILENCE_MS,
        "plans": [asdict(p) for p in plans],
        "channel_per_call": channel_per_call,
    }
    assert popen.stdin is not None
    popen.stdin.write(json.dumps(spec).encode())
    popen.stdin.close()
    return popen


def run_load(
    gw: procs.Proc,
    mesh: list[procs.Proc],
    plans: list[CallPlan],
    per_process: int,
    tls_env: dict[str, str] | None = None,
    channel_per_call: bool = False,
) -> dict[str, object]:
    n = len(plans)
    rss0 = gw.rss_mb()
    rss_peak = rss0
    start_at = time.monotonic() + 2.0  # the callers' processes start meanwhile
    gen_cpu0 = _children_cpu()  # the callers are reaped children: their CPU lands here
    gens = [
        spawn_loadgen(gw.address, start_at, plans[i : i + per_process], tls_env, channel_per_call)
        for i in range(0, n, per_process)
    ]
    outputs: list[bytes] = [b""] * len(gens)

    def collect(i: int) -> None:
        assert gens[i].stdout is not None
        outputs[i] = gens[i].stdout.read()
        gens[i].wait()

    readers = [threading.Thread(target=collect, args=(i,)) for i in range(len(gens))]
    for t in readers:
        t.start()
    time.sleep(max(0.0, start_at - time.monotonic()))
    cpu0 = {p.name: p.cpu_seconds() for p in mesh}
    gw_main0 = gw.main_thread_cpu_seconds()
    t0 = time.monotonic()
    while any(t.is_alive() for t in readers):
        time.sleep(0.5)
        rss_peak = max(rss_peak, gw.rss_mb())
    elapsed = time.monotonic() - t0
    cpu_by = {p.name: p.cpu_seconds() - cpu0[p.name] for p in mesh}
    gw_main = gw.main_thread_cpu_seconds() - gw_main0
    results = [r for out in outputs for r in json.loads(out or b"[]")]
    gen_cpu = _children_cpu() - gen_cpu0

    errors = [r["error"] for r in results if r["error"]]
    call_minutes = sum(r["ended"] - r["connected"] for r in results if r["ended"]) / 60.0
    window_start = max((r["connected"] for r in results), default=0.0)
    window_end = min((r["ended"] for r in results), default=0.0)
    turns = [t for r in results for t in r["turns"]]
    steady = [t for t in turns if window_start <= t[0] <= window_end and t[1] > 0]
    added = [(t[1] - t[0]) * 1000.0 - CONFIGURED_MS for t in steady]
    stages = np.array([t[2] for t in steady], dtype=float) if steady else np.zeros((0, 5))
    gaps = [abs(g - 20.0) for r in results for g in r["gaps_ms"]]
    lag = [v for r in results for v in r["lag_ms"]]
    cpu = sum(cpu_by.values())
    per_min = max(call_minutes, 1e-9)
    return {
        "calls": n,
        "turns": len(turns),
        "steady_turns": len(steady),
        "errors": len(errors),
        "first_error": errors[0] if errors else "",
        "added": added,
        "cpu_s_per_call_min": cpu / per_min,
        "rss_mb_per_call": (rss_peak - rss0) / n,
        "jitter_p99": _pct(gaps, 99),
        "lag_p99": _pct(lag, 99),
        "stage_p50": np.median(stages, axis=0) if len(stages) else [float("nan")] * 5,
        "stage_p99": np.percentile(stages, 99, axis=0) if len(stages) else [float("nan")] * 5,
        "cpu_split": " ".join(f"{k}={v / per_min:.3f}" for k, v in cpu_by.items())
        + f" (gateway loop thread {gw_main / max(cpu_by['gateway'], 1e-9):.0%})"
        + f"; callers used {gen_cpu / elapsed:.2f} cores in {len(gens)} process(es), mesh {cpu / elapsed:.2f}",
    }


def _children_cpu() -> float:
    t = os.times()
    return float(t.children_user + t.children_system)


def leak_check(gw: procs.Proc, tls: TlsConfig) -> tuple[float, float]:
    """RSS of the gateway after 100 and after 1,000 short sequential calls."""
    import asyncio

    import uvloop

    from tests.bench.loadgen import HANGUP, METHOD, SILENCE_FRAME, config_request

    config = config_request(END_OF_TURN_SILENCE_MS)

    async def run() -> tuple[float, float]:
        async with edge_channel(gw.address, tls) as ch:
            converse = ch.stream_stream(METHOD)
            after: dict[int, float] = {}
            for i in range(1, 1001):
                call = converse(metadata=(("x-tenant-id", "bench-leak"), bearer("bench-leak")))
                await call.write(config)
                for _ in range(5):
                    await call.write(SILENCE_FRAME)
                await call.write(HANGUP)
                await call.done_writing()
                async for _ in call:
                    pass
                if i in (100, 1000):
                    await asyncio.sleep(0.3)
                    after[i] = gw.rss_mb()
            return after[100], after[1000]

    return uvloop.run(run())


def print_probes(directory: str, windows: list[tuple[int, float, float]]) -> None:
    """Event-loop lag (how late a 5 ms timer fired) and GC pauses of each process, per run."""
    print(
        "   event-loop lag p50/p99/max ms; GC collections gen0/gen1/gen2, longest pause ms (its CPU"
        " ms); most GC-tracked objects (not frozen)"
    )
    for name in ("gateway", "stt", "llm", "tts"):
        try:
            with open(os.path.join(directory, f"{name}.probe.json")) as f:
                data = json.load(f)
        except FileNotFoundError:
            continue
        cells = []
        for n, t0, t1 in windows:
            lag = [v for t, v in data["lag"] if t0 <= t <= t1]
            gcs = [(g, d, c) for t, g, d, c in data["gc"] if t0 <= t <= t1]
            counts = "/".join(str(sum(1 for g, _, _ in gcs if g == gen)) for gen in range(3))
            longest = max((d for _, d, _ in gcs), default=0.0)
            longest_cpu = max((c for _, _, c in gcs), default=0.0)
            heap = max((v for t, v in data["heap"] if t0 <= t <= t1), default=0)
            cells.append(
                f"{n}: {_pct(lag, 50):.1f}/{_pct(lag, 99):.1f}/{max(lag, default=0.0):.0f}"
                f" gc {counts} {longest:.1f}({longest_cpu:.1f}) heap {heap / 1000:.0f}k"
            )
        print(f"   {name:>8}  " + "  |  ".join(cells))


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


def _row(r: dict[str, object]) -> str:
    added = r["added"]
    assert isinstance(added, list)
    p50, p99 = r["stage_p50"], r["stage_p99"]
    stages = " / ".join(f"{a:.0f}|{b:.0f}" for a, b in zip(p50, p99, strict=True))  # type: ignore[call-overload]
    line = (
        f"{r['calls']:>6} {r['steady_turns']:>4}/{r['turns']:<4} {r['errors']:>4}"
        f" {_pct(added, 50):>8.1f}ms {_pct(added, 95):>5.1f}ms {_pct(added, 99):>5.1f}ms"
        f" {r['cpu_s_per_call_min']:>14.3f} {r['rss_mb_per_call']:>11.3f}"
        f" {r['jitter_p99']:>9.1f}ms {r['lag_p99']:>9.1f}ms   {stages}   [CPU s/call-min: {r['cpu_split']}]"
    )
    if r["first_error"]:
        line += f"\n       first error: {r['first_error']}"
    return line


def print_header() -> None:
    """The column titles of the load table (one row per call level: ``_row``)."""
    print(
        f"{'calls':>6} {'turns':>9} {'err':>4} {'added p50':>10} {'p95':>7} {'p99':>7}"
        f" {'CPU s/call-min':>14} {'RSS MB/call':>11} {'jitter p99':>11} {'caller lag':>11}"
        "   gateway stages p50|p99 (ms after speech end): stt_final / end_of_turn /"
        " llm_first_token / tts_first_audio / first_audio_out"
    )


def _settings_fields(env: dict[str, str]) -> dict[str, str]:
    names = {"VOICEAI_TLS": "mode"}
    return {names.get(k, k.removeprefix("VOICEAI_TLS_").lower()): v for k, v in env.items()}


def bench_mesh(
    args: argparse.Namespace,
    pki: DevPki | None,
    probe_dir: str | None,
    windows: list[tuple[int, float, float]],
    extra_env: dict[str, str] | None = None,
) -> None:
    """Start the mesh (mTLS with ``pki``, else plaintext), run every load level, stop it."""
    env = {**fake_env(), **(extra_env or {})}
    hook_dir = args.profile or probe_dir
    hooks = ",".join(h for h, on in (("profile", args.profile), ("probe", args.probe)) if on)
    # The bench process dials as the REST front would (health checks, the leak check); the
    # callers trust the CA only; each mesh process gets its own identity.
    client_env = pki.env_for("rest") if pki else {"VOICEAI_TLS": "off"}
    client_tls = TlsConfig.from_settings(TlsSettings(**_settings_fields(client_env)))
    caller_env = (
        {"VOICEAI_TLS": "tls", "VOICEAI_TLS_CA_FILE": str(pki.ca_cert)} if pki else {"VOICEAI_TLS": "off"}
    )

    def start(name: str, module: str, env: dict[str, str], args: tuple[str, ...] = ()):  # type: ignore[no-untyped-def]
        own = pki.env_for(name) if pki else {"VOICEAI_TLS": "off"}
        return procs.start(
            name, module, {**env, **own}, profile_dir=hook_dir, hooks=hooks, tls=client_tls, args=args
        )

    with (
        start("stt", "stt_svc", env) as stt,
        start("llm", "llm_svc", env) as llm,
        start("tts", "tts_svc", env) as tts,
    ):
        gw_env = {
            **env,
            "VOICEAI_STT_ADDRESSES": stt.address,
            "VOICEAI_LLM_ADDRESSES": llm.address,
            "VOICEAI_TTS_ADDRESSES": tts.address,
        }
        # One gateway process: its CPU, RSS and loop thread are what this table reports.
        with start("gateway", "gateway", gw_env, args=("--workers", "1")) as gw:
            mesh = [stt, llm, tts, gw]
            arrivals = (
                "synchronized: all turns at once"
                if args.sync
                else f"calls dial over {args.stagger:.0f} s, random turn lengths and pauses"
            )
            arrivals += "; mTLS on every hop" if pki else "; plaintext (VOICEAI_TLS=off)"
            print(
                f"\n== Gateway load: whole mesh, zero-cost engines (end-of-turn silence {END_OF_TURN_SILENCE_MS} ms,"
                f" STT final {STT_FINAL_MS} ms, LLM first token {LLM_FIRST_TOKEN_MS} ms,"
                f" TTS first audio {TTS_FIRST_AUDIO_MS} ms; {args.turns} turns per call; {arrivals})"
            )
            print_header()
            for n in (int(x) for x in args.calls.split(",")):
                plans = plans_for(n, args.turns, sync=args.sync, stagger_s=args.stagger, seed=args.seed)
                t0 = time.monotonic()
                print(_row(run_load(gw, mesh, plans, args.calls_per_process, caller_env)), flush=True)
                windows.append((n, t0, time.monotonic()))
            if not args.no_leak_check:
                rss100, rss1000 = leak_check(gw, client_tls)
                print(
                    f"gateway RSS after 100 short calls: {rss100:.1f} MB; after 1,000: {rss1000:.1f} MB ({rss1000 - rss100:+.1f} MB)"
                )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tests.bench.gateway",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--calls", default="10,50,100,200", help="comma-separated concurrency levels")
    parser.add_argument("--turns", type=int, default=5, help="turns per call")
    parser.add_argument("--sync", action="store_true", help="thundering herd: all turns at once")
    parser.add_argument("--stagger", type=float, default=3.0, help="seconds over which calls dial")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--calls-per-process", type=int, default=100, help="callers per load process")
    parser.add_argument("--no-leak-check", action="store_true")
    parser.add_argument(
        "--profile", metavar="DIR", help="run every mesh process under cProfile, stats into DIR"
    )
    parser.add_argument(
        "--probe", action="store_true", help="report event-loop lag and GC pauses of every mesh process"
    )
    parser.add_argument(
        "--tls",
        choices=("off", "on", "both"),
        default="off",
        help="mTLS on every hop (a dev CA per run): off, on, or both in one run (plaintext first)",
    )
    parser.add_argument(
        "--telemetry",
        nargs="?",
        const="off,on",
        default="",
        metavar="ORDER",
        help="run every level with tracing off and on (always-on sampling, OTLP to a local receiver,"
        " /metrics served), in ORDER (default off,on; on,off shows what the order adds)",
    )
    args = parser.parse_args(argv)
    if args.telemetry:
        receiver = OtlpReceiver()
        try:
            modes = {
                "off": {},
                "on": {
                    "OTEL_TRACES_EXPORTER": "otlp",
                    "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
                    "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
                    "OTEL_TRACES_SAMPLER_ARG": "1",
                    "VOICEAI_METRICS_PORT": "0",
                },
            }
            for mode in args.telemetry.split(","):
                print(f"\n### tracing {mode}")
                run_mesh(args, modes[mode.strip()])
            print(
                f"  (the receiver got {receiver.service.spans} spans in {receiver.service.exports} exports)"
            )
        finally:
            receiver.stop()
        return
    run_mesh(args, {})


def run_mesh(args: argparse.Namespace, extra_env: dict[str, str]) -> None:
    """Run every level of ``args.calls`` through a mesh with ``extra_env`` (per TLS mode asked)."""
    probe_dir = tempfile.mkdtemp(prefix="voiceai-probe-") if args.probe else None
    windows: list[tuple[int, float, float]] = []
    modes = {"off": [False], "on": [True], "both": [False, True]}[args.tls]
    for tls in modes:
        pki = ensure_dev_pki(Path(tempfile.mkdtemp(prefix="voiceai-bench-tls-"))) if tls else None
        bench_mesh(args, pki, probe_dir, windows, extra_env)
    if probe_dir is not None:
        print_probes(probe_dir, windows)
    print(
        "  (added = end to end minus the configured latencies above, over turns that started while all"
        " calls were connected; CPU is all four mesh processes per call-minute; caller lag p99 = how late"
        " the callers' own timers woke, an upper bound on how much of 'added' is the load generator)"
    )


if __name__ == "__main__":
    main()
