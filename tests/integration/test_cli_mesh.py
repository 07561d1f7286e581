"""``python -m gateway.mesh`` as a user runs it: four real processes, ready on health, a call
through them, and a clean stop on Ctrl-C; nothing left behind when the launcher dies; a clear
error naming the service that failed to start. Engines are the zero-cost fakes (no models)."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import psutil
import pytest

from gateway.cli import CallOptions, Utterance, place_call
from tests.credentials import bearer

pytestmark = pytest.mark.slow  # starts four Python processes and runs real-time audio

ROOT = Path(__file__).resolve().parents[2]
FAKES = {
    "VOICEAI_STT_ENGINE": "tests.fakes.stt:ZeroCostRecognizer",
    "VOICEAI_LLM_ENGINE": "tests.fakes.llm:ZeroCostChatModel",
    "VOICEAI_TTS_ENGINE": "tests.fakes.tts:ZeroCostSynthesizer",
}


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@contextmanager
def launcher(
    *args: str, env: dict[str, str] | None = None
) -> Iterator[tuple[subprocess.Popen[str], list[int]]]:
    gw, stt, llm, tts, tenant = free_ports(5)
    state_dir = tempfile.mkdtemp(prefix="voiceai-mesh-state-")
    ports = [
        "--tenant-port",
        str(tenant),
        "--state-dir",
        state_dir,
        "--gateway-port",
        str(gw),
        "--stt-port",
        str(stt),
        "--llm-port",
        str(llm),
        "--tts-port",
        str(tts),
    ]
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway.mesh", *ports, *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), **FAKES, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        yield proc, [gw, stt, llm, tts]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        stop_embedded_servers(state_dir)


def stop_embedded_servers(state_dir: str) -> None:
    """A launcher that was killed could not stop the PostgreSQL and Redis it started."""
    leftovers = [
        p for p in psutil.process_iter(["cmdline"]) if state_dir in " ".join(p.info["cmdline"] or ())
    ]
    for p in leftovers:
        p.terminate()
    psutil.wait_procs(leftovers, timeout=10)


def read_until(proc: subprocess.Popen[str], marker: str, timeout: float = 90.0) -> str:
    assert proc.stdout is not None
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line)
        if marker in line:
            return "".join(seen)
    raise AssertionError(f"no {marker!r} in the launcher output:\n{''.join(seen)}")


def children_of(pid: int) -> list[psutil.Process]:
    """The launcher's Python services (not the embedded redis-server it also runs)."""
    return [c for c in psutil.Process(pid).children(recursive=True) if "python" in c.name()]


def wait_gone(procs: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    _gone, alive = psutil.wait_procs(procs, timeout=timeout)
    return alive


async def test_the_mesh_comes_up_takes_a_call_and_stops_cleanly_on_ctrl_c() -> None:
    with launcher() as (proc, (gw, stt, llm, tts)):
        banner = read_until(proc, "Ctrl-C stops the mesh")
        for port in (gw, stt, llm, tts):
            assert f"127.0.0.1:{port}" in banner
        children = children_of(proc.pid)
        assert sorted(c.cmdline()[2] for c in children) == [
            "gateway",
            "llm_svc",
            "stt_svc",
            "tenant_svc",
            "tts_svc",
        ]
        # Every child is in its own process group: a terminal's Ctrl-C reaches the launcher only.
        assert all(os.getpgid(c.pid) != os.getpgid(proc.pid) for c in children)
        # A short drain under the launcher, so Ctrl-C does not wait out the gateway's 10 minutes.
        assert {c.environ().get("VOICEAI_GRACE_PERIOD_S") for c in children} == {"5.0"}

        tone = (6000 * np.sin(2 * np.pi * 300 * np.arange(8000) / 16000)).astype("<i2").tobytes()
        report = await place_call(
            CallOptions(
                gateway=f"127.0.0.1:{gw}",
                utterances=[Utterance(pcm=tone)],
                pause_ms=200,
                # The services verify it with the session's dev key (VOICEAI_AUTH_DEV_KEY_DIR).
                authorization=bearer("demo")[1],
            )
        )
        assert report.ok, (report.error, report.notes)
        assert [t.speaker for t in report.transcript][-2:] == ["caller", "agent"]
        assert "Sure thing." in report.transcript[-1].text  # the fake LLM's reply, spoken by the fake TTS
        assert report.agent_audio

        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert wait_gone(children, 5) == []
    # Stopped gateway first, then the services in reverse start order.
    stops = [m.group(1) for m in re.finditer(r"^\S+ I (\w+)\s+stopped$", out, re.MULTILINE)]
    assert stops == ["gateway", "tenant", "tts", "llm", "stt"], out


def test_the_services_die_with_the_launcher() -> None:
    with launcher() as (proc, _ports):
        read_until(proc, "voiceai-mesh is up")
        children = children_of(proc.pid)
        assert len(children) == 5
        proc.kill()  # SIGKILL: no chance to clean up; the kernel tells the children
        proc.wait()
        assert wait_gone(children, 10) == []


def test_a_service_that_cannot_start_is_named_with_its_last_lines() -> None:
    with launcher(env={"VOICEAI_TTS_ENGINE": "no_such_module:Voice"}) as (proc, _ports):
        out, _ = proc.communicate(timeout=90)
    assert proc.returncode == 1
    assert "voiceai-mesh: tts_svc exited with code 1 before it was ready. Its last lines:" in out
    assert "No module named 'no_such_module'" in out.split("Its last lines:")[1]
    assert "stopping the mesh" in out


def test_a_taken_port_is_reported_before_anything_starts() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with launcher("--llm-port", str(port)) as (proc, _ports):
            out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 1
    assert f"llm_svc cannot listen on 127.0.0.1:{port}" in out and "--base-port" in out
    assert "stopping the mesh" not in out  # nothing was started
