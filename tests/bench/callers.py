"""Gateway benchmark shaped like real callers (issue 21), beside the gateway section.

    python -m tests.bench.callers [--calls 10,50,100,150,200] [--workers 1,2] [--idle-s 60]

What differs from ``tests.bench.gateway`` (whose load generator, turn timing and table it
reuses): every caller has its own channel and TCP connection (as independent SIP edges or
clients would connect), and the agent's reply is a ~60-character sentence at 60 ms of audio per
character (``--reply``, ``--ms-per-char``), so playout, not turn set-up, dominates a call as it
does on a real line. Frames are 20 ms both ways; callers run in their own processes.

Before any call, the idle mesh is measured: CPU of each process over ``--idle-s`` seconds with
no call (% of one core). Then one table per gateway worker count (``--workers``: the gateway
runs as ``python -m gateway --workers N``, its CPU and RSS summed over the process group):
added latency p50/p95/p99, jitter p99, CPU per call-minute per process and in total, gateway
RSS per call, and the callers' own CPU (a saturated generator shows there).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import psutil

from tests.bench import gateway, procs

REPLY = "Sure thing, I can help with that. Let me check the calendar now."
MS_PER_CHAR = 60


class GroupProc(procs.Proc):
    """A process and its children measured as one (a gateway supervisor and its workers)."""

    def _tree(self) -> list[psutil.Process]:
        root = self.ps
        try:
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return [root]

    def cpu_seconds(self) -> float:
        """CPU of the whole tree (a worker replaced mid-run loses its share: rare, noted)."""
        total = 0.0
        for p in self._tree():
            with contextlib.suppress(psutil.NoSuchProcess):
                t = p.cpu_times()
                total += t.user + t.system
        return total

    def main_thread_cpu_seconds(self) -> float:
        """Sum of every process's main (event-loop) thread."""
        total = 0.0
        for p in self._tree():
            with contextlib.suppress(psutil.NoSuchProcess):
                for t in p.threads():
                    if t.id == p.pid:
                        total += t.user_time + t.system_time
        return total

    def rss_mb(self) -> float:
        """Resident memory of the whole tree."""
        total = 0
        for p in self._tree():
            with contextlib.suppress(psutil.NoSuchProcess):
                total += p.memory_info().rss
        return total / 2**20


def listening_workers(gw: procs.Proc) -> list[psutil.Process]:
    """The group's processes that accept connections on its port (SERVING as soon as one does)."""
    port = int(gw.address.rsplit(":", 1)[1])
    found = []
    for p in [gw.ps, *gw.ps.children()]:
        with contextlib.suppress(psutil.NoSuchProcess):
            conns = p.net_connections(kind="tcp")
            if any(c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port for c in conns):
                found.append(p)
    return found


def wait_listening(gw: procs.Proc, workers: int, timeout_s: float = 60.0) -> None:
    """Until every worker listens: the port answers once the first does, and callers connecting
    before the others would all land on it."""
    deadline = time.monotonic() + timeout_s
    while len(listening_workers(gw)) < workers:
        if time.monotonic() > deadline or gw.popen.poll() is not None:
            raise RuntimeError(f"{len(listening_workers(gw))} of {workers} gateway workers listening")
        time.sleep(0.05)


@contextlib.contextmanager
def start_gateway(env: dict[str, str], workers: int) -> Iterator[GroupProc]:
    """The gateway under test; ``workers`` > 1 runs it as a supervisor with that many workers."""
    args = ("--workers", str(workers))
    with procs.start("gateway", "gateway", env, args=args) as p:
        wait_listening(p, workers)
        yield GroupProc(p.name, p.popen, p.address)


@contextlib.contextmanager
def speech_services(env: dict[str, str]) -> Iterator[tuple[list[procs.Proc], dict[str, str]]]:
    """stt, llm and tts processes on ``env``; yields them and the gateway's env that finds them."""
    with (
        procs.start("stt", "stt_svc", env) as stt,
        procs.start("llm", "llm_svc", env) as llm,
        procs.start("tts", "tts_svc", env) as tts,
    ):
        addresses = {
            "VOICEAI_STT_ADDRESSES": stt.address,
            "VOICEAI_LLM_ADDRESSES": llm.address,
            "VOICEAI_TTS_ADDRESSES": tts.address,
        }
        yield [stt, llm, tts], {**env, **addresses}


def measure_idle(mesh: list[procs.Proc], seconds: float) -> str:
    """CPU of each process of a mesh with no call, as % of one core."""
    cpu0 = {p.name: p.cpu_seconds() for p in mesh}
    t0 = time.monotonic()
    time.sleep(seconds)
    wall = time.monotonic() - t0
    shares = {p.name: (p.cpu_seconds() - cpu0[p.name]) / wall * 100.0 for p in mesh}
    cells = " ".join(f"{k}={v:.2f}%" for k, v in shares.items())
    return f"idle mesh over {wall:.0f} s, % of one core: {cells} total={sum(shares.values()):.2f}%"


@contextlib.contextmanager
def sampled(gw: procs.Proc, directory: str | None, name: str) -> Iterator[None]:
    """With ``directory``: py-spy samples the gateway group meanwhile (every worker; only threads
    holding the GIL, so an idle loop is not counted), collapsed stacks into ``directory/name.txt``
    (flame-graph input; ``python -m tests.bench.stacks`` sums them)."""
    if directory is None:
        yield
        return
    os.makedirs(directory, exist_ok=True)
    out = os.path.join(directory, f"{name}.txt")
    spy = subprocess.Popen(
        [os.path.join(os.path.dirname(sys.executable), "py-spy"), "record", "--pid", str(gw.popen.pid)]
        + ["--subprocesses", "--nonblocking", "--gil", "--rate", "97", "--format", "raw", "--output", out],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield
    finally:
        spy.send_signal(signal.SIGINT)  # py-spy writes its output when interrupted
        try:
            spy.wait(30)
        except subprocess.TimeoutExpired:
            spy.kill()
            spy.wait()


def main(argv: list[str] | None = None) -> None:
    """Run the idle measurement and the caller-shaped load at each worker count and call level."""
    parser = argparse.ArgumentParser(
        prog="python -m tests.bench.callers",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--calls", default="10,50,100,150,200", help="comma-separated concurrency levels")
    parser.add_argument("--workers", default="1", help="comma-separated gateway worker counts")
    parser.add_argument("--turns", type=int, default=4, help="turns per call")
    parser.add_argument("--reply", default=REPLY, help="the agent's reply text (every turn)")
    parser.add_argument("--ms-per-char", type=int, default=MS_PER_CHAR, help="reply audio per character")
    parser.add_argument("--idle-s", type=float, default=60.0, help="idle measurement before any call")
    parser.add_argument("--stagger", type=float, default=3.0, help="seconds over which calls dial")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--calls-per-process", type=int, default=50, help="callers per load process")
    parser.add_argument(
        "--py-spy", metavar="DIR", help="sample the gateway with py-spy during each level, stacks into DIR"
    )
    args = parser.parse_args(argv)
    env = {
        **gateway.fake_env(),
        "VOICEAI_FAKE_LLM_REPLY": args.reply,
        "VOICEAI_FAKE_TTS_MS_PER_CHAR": str(args.ms_per_char),
    }
    levels = [int(x) for x in args.calls.split(",")]
    print(
        f"\n== Gateway load shaped like real callers: one connection per caller, reply of"
        f" {len(args.reply)} characters at {args.ms_per_char} ms/char"
        f" (~{len(args.reply) * args.ms_per_char / 1000:.1f} s of audio), 20 ms frames both ways,"
        f" {args.turns} turns per call, calls dial over {args.stagger:.0f} s"
    )
    with speech_services(env) as (services, gw_env):
        for workers in (int(x) for x in args.workers.split(",")):
            with start_gateway(gw_env, workers) as gw:
                mesh: list[procs.Proc] = [*services, gw]
                print(f"-- gateway workers: {workers}")
                if args.idle_s > 0:
                    print("  " + measure_idle(mesh, args.idle_s), flush=True)
                gateway.print_header()
                for n in levels:
                    plans = gateway.plans_for(
                        n, args.turns, sync=False, stagger_s=args.stagger, seed=args.seed
                    )
                    with sampled(gw, args.py_spy, f"gateway-w{workers}-c{n}"):
                        result = gateway.run_load(
                            gw, mesh, plans, args.calls_per_process, channel_per_call=True
                        )
                    print(gateway._row(result), flush=True)
    print(
        "  (added = end to end minus the configured latencies, over turns that started while all calls"
        " were connected; CPU is per call-minute, per process and in total, the gateway summed over its"
        " workers; RSS is the gateway group's growth per call; figures from a loaded shared machine are"
        " indicative only)"
    )


if __name__ == "__main__":
    main()
