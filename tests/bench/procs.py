"""Start mesh processes for benchmarks and measure their CPU and memory."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import psutil

from common.healthcheck import wait_serving
from common.tls import TlsConfig

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    address: str

    @property
    def ps(self) -> psutil.Process:
        return psutil.Process(self.popen.pid)

    def cpu_seconds(self) -> float:
        t = self.ps.cpu_times()
        return float(t.user + t.system)

    def main_thread_cpu_seconds(self) -> float:
        """CPU of the event-loop thread only (the rest is grpc's I/O and poller threads)."""
        for t in self.ps.threads():
            if t.id == self.popen.pid:
                return float(t.user_time + t.system_time)
        return 0.0

    def rss_mb(self) -> float:
        return float(self.ps.memory_info().rss) / 2**20


@contextlib.contextmanager
def start(
    name: str,
    module: str,
    env: dict[str, str],
    log_path: str | None = None,
    profile_dir: str | None = None,
    hooks: str = "profile",
    tls: TlsConfig | None = None,
    args: Sequence[str] = (),
) -> Iterator[Proc]:
    """Start ``python -m module`` on a free port; with ``profile_dir``, under the measurement
    ``hooks`` of tests/bench/profiled.py (output in ``profile_dir/<name>.*`` once it drained)."""
    port = free_port()
    full_env = {**os.environ, "VOICEAI_LOG_LEVEL": "WARNING", "PYTHONPATH": ROOT, **env}
    out = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115
    argv = [sys.executable, "-m", module, "--port", str(port), *args]
    if profile_dir:
        os.makedirs(profile_dir, exist_ok=True)
        out_prefix = os.path.join(profile_dir, name)
        argv = [sys.executable, "-m", "tests.bench.profiled", out_prefix, module, "--port", str(port), *args]
        full_env["VOICEAI_BENCH_HOOKS"] = hooks
    popen = subprocess.Popen(argv, env=full_env, cwd=ROOT, stdout=out, stderr=out)
    proc = Proc(name, popen, f"127.0.0.1:{port}")
    try:
        wait_serving(proc.address, 90.0, alive=lambda: popen.poll() is None, server_name=name, tls=tls)
        yield proc
    finally:
        popen.terminate()
        try:
            popen.wait(10)
        except subprocess.TimeoutExpired:
            popen.kill()
            popen.wait()
