"""Run the whole mesh locally: ``python -m gateway.mesh`` (``make run``).

Starts stt_svc, llm_svc, tts_svc and the gateway as child processes on fixed ports with static
discovery, waits until each reports SERVING, and runs in the foreground until Ctrl-C, then
stops them gateway-first. ``--demo`` (``make demo``) places a scripted call through the
running mesh, prints what was said and how fast, writes the audio under ``var/``, and stops.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from common import healthcheck

SERVICES = (("stt_svc", 1), ("llm_svc", 2), ("tts_svc", 3), ("gateway", 0))
DEMO_SCRIPT = (
    ("Hi, I'd like to book a cleaning for next Tuesday.", None),
    ("Actually, sorry, what are your opening hours?", 1500),  # talks over the agent's reply
    ("Great, thank you. Goodbye.", None),
)


@dataclass
class Child:
    name: str
    address: str
    popen: subprocess.Popen[bytes]


def _die_with_parent() -> None:  # runs in the child before exec (Linux): no orphans
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def start_mesh(base_port: int, host: str = "127.0.0.1") -> list[Child]:
    addresses = {name: f"{host}:{base_port + offset}" for name, offset in SERVICES}
    env = {
        **os.environ,
        "VOICEAI_STT_ADDRESSES": addresses["stt_svc"],
        "VOICEAI_LLM_ADDRESSES": addresses["llm_svc"],
        "VOICEAI_TTS_ADDRESSES": addresses["tts_svc"],
        "VOICEAI_HOST": host,
    }
    children = []
    for name, _offset in SERVICES:
        port = addresses[name].rsplit(":", 1)[1]
        popen = subprocess.Popen(
            [sys.executable, "-m", name, "--port", port],
            env=env,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,  # noqa: PLW1509
        )
        children.append(Child(name, addresses[name], popen))
    return children


def wait_serving(children: list[Child], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    for child in children:

        def alive(popen: subprocess.Popen[bytes] = child.popen) -> bool:
            return popen.poll() is None

        try:
            healthcheck.wait_serving(child.address, max(1.0, deadline - time.monotonic()), alive=alive)
        except RuntimeError as e:
            raise RuntimeError(f"{child.name}: {e}") from e


def stop_mesh(children: list[Child], timeout: float = 15.0) -> None:
    for child in reversed(children):  # gateway first: it drains calls, then the services
        if child.popen.poll() is None:
            child.popen.send_signal(signal.SIGTERM)
        try:
            child.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            child.popen.kill()
            child.popen.wait()


def run_demo(gateway: str, out_dir: Path) -> int:
    from gateway.cli import CallOptions, Utterance, format_report, place_call
    from gateway.wav import stereo_timeline, write_pcm16

    utterances = [Utterance(text=t, barge_in_after_ms=b) for t, b in DEMO_SCRIPT]
    print("\n== demo call: a caller phones Bright Smile Dental (3 turns, one barge-in) ==\n", flush=True)
    report = asyncio.run(place_call(CallOptions(gateway=gateway, utterances=utterances)))
    print(format_report(report), flush=True)
    write_pcm16(out_dir / "demo-agent.wav", report.agent_audio, 16000)
    write_pcm16(
        out_dir / "demo-call.wav", stereo_timeline(report.caller_chunks, report.agent_chunks, 16000), 16000, 2
    )
    print(
        f"\n  audio: {out_dir / 'demo-agent.wav'} (agent), {out_dir / 'demo-call.wav'} (stereo: caller left, agent right)"
    )
    return 0 if report.ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gateway.mesh", description=__doc__)
    parser.add_argument(
        "--base-port", type=int, default=50060, help="gateway port; services use the next three"
    )
    parser.add_argument("--demo", action="store_true", help="place a scripted call, then stop")
    parser.add_argument("--out-dir", default="var")
    args = parser.parse_args(argv)

    stop = {"requested": False}

    def on_signal(_signum: int, _frame: object) -> None:
        stop["requested"] = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    children = start_mesh(args.base_port)
    code = 0
    try:
        wait_serving(children)
        print("\n  voiceai-mesh is up:", ", ".join(f"{c.name}={c.address}" for c in children), flush=True)
        if args.demo:
            code = run_demo(children[-1].address, Path(args.out_dir))
        else:
            print("  place a call:  .venv/bin/voiceai call --say 'What are your opening hours?'", flush=True)
            print("  Ctrl-C stops the mesh.\n", flush=True)
            while not stop["requested"] and all(c.popen.poll() is None for c in children):
                time.sleep(0.2)
            dead = [c.name for c in children if c.popen.poll() is not None]
            if dead and not stop["requested"]:
                print(f"  {', '.join(dead)} exited unexpectedly; stopping the mesh", flush=True)
                code = 1
    except RuntimeError as e:
        print(f"  mesh failed to start: {e}", file=sys.stderr, flush=True)
        code = 1
    finally:
        stop_mesh(children)
    return code


if __name__ == "__main__":
    sys.exit(main())
