"""Gateway instruction count per call-minute, under valgrind: a CPU measure that other load on
the machine does not move (wall-clock and even CPU-seconds do, by 10-20% on a shared box).

    python -m tests.bench.instructions [--calls 2] [--turns 3] [--out DIR]

The services run normally with zero-cost engines; the gateway runs under ``valgrind
--tool=callgrind`` with collection switched on only while the calls run (start-up is not
counted). Counts are user-space instructions of every gateway thread (grpc's included); kernel
time (syscalls, context switches) is not in them. Repeat runs agree within ~2%. The callers are
the benchmark's own (tests/bench/loadgen.py); at 1-2 calls nothing batches, so this is the
per-message cost. ``callgrind_annotate DIR/callgrind.out.1`` shows where it goes (C functions;
Python code shows up as the interpreter loop).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

from common.healthcheck import wait_serving
from tests.bench import procs
from tests.bench.gateway import END_OF_TURN_SILENCE_MS, fake_env, plans_for, spawn_loadgen


def _totals(path: str) -> int:
    with open(path) as f:
        for line in f:
            if line.startswith("totals:"):
                return int(line.split()[1])
    raise RuntimeError(f"no totals in {path}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tests.bench.instructions",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--calls", type=int, default=2)
    parser.add_argument("--turns", type=int, default=3)
    parser.add_argument("--out", help="directory for the callgrind output (default: a temporary one)")
    args = parser.parse_args(argv)
    out_dir = args.out or tempfile.mkdtemp(prefix="voiceai-callgrind-")
    os.makedirs(out_dir, exist_ok=True)
    out = os.path.join(out_dir, "callgrind.out")
    env = fake_env()
    with (
        procs.start("stt", "stt_svc", env) as stt,
        procs.start("llm", "llm_svc", env) as llm,
        procs.start("tts", "tts_svc", env) as tts,
    ):
        port = procs.free_port()
        gw_env = {
            **os.environ,
            **env,
            "VOICEAI_LOG_LEVEL": "WARNING",
            "PYTHONPATH": procs.ROOT,
            "VOICEAI_STT_ADDRESSES": stt.address,
            "VOICEAI_LLM_ADDRESSES": llm.address,
            "VOICEAI_TTS_ADDRESSES": tts.address,
        }
        argv_gw = [sys.executable, "-m", "gateway", "--port", str(port), "--workers", "1"]
        gw = subprocess.Popen(
            ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}", *argv_gw],
            env=gw_env,
            cwd=procs.ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            address = f"127.0.0.1:{port}"
            wait_serving(address, 600.0, alive=lambda: gw.poll() is None)
            pid = str(gw.pid)
            subprocess.run(["callgrind_control", "-i", "on", pid], check=True, capture_output=True)
            plans = plans_for(args.calls, args.turns, sync=False, stagger_s=0.5, seed=1)
            loadgen = spawn_loadgen(address, time.monotonic() + 2.0, plans)
            assert loadgen.stdout is not None
            results = json.loads(loadgen.stdout.read())
            loadgen.wait()
            subprocess.run(["callgrind_control", "-i", "off", pid], check=True, capture_output=True)
            subprocess.run(["callgrind_control", "-d", pid], check=True, capture_output=True)
        finally:
            gw.terminate()
            gw.wait(120)
    instructions = _totals(f"{out}.1")
    minutes = sum(r["ended"] - r["connected"] for r in results) / 60.0
    turns = sum(len(r["turns"]) for r in results)
    errors = [r["error"] for r in results if r["error"]]
    print(
        f"gateway under callgrind, {args.calls} call(s) x {args.turns} turns (end-of-turn silence"
        f" {END_OF_TURN_SILENCE_MS} ms): {instructions / 1e6:.1f} M instructions over"
        f" {minutes:.3f} call-minutes = {instructions / 1e6 / minutes:.0f} M instructions per call-minute"
        f" ({turns} turns, {len(errors)} errors){'; first error: ' + errors[0] if errors else ''}"
    )
    print(f"  profile: callgrind_annotate {out}.1")


if __name__ == "__main__":
    main()
