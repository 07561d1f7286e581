"""The whole mesh on one machine: ``python -m gateway.mesh`` (``make run``) and ``--demo`` (``make demo``).

Starts an embedded Redis, then stt_svc, llm_svc, tts_svc, tenant_svc (embedded PostgreSQL) and
the gateway as child processes (static discovery), seeds the demo tenant, shows
their logs in one stream, waits until every one reports SERVING on grpc.health.v1, then runs in
the foreground until Ctrl-C or SIGTERM and stops them gateway-first. ``--demo`` instead places a
scripted call through the fresh mesh, prints what was said and how fast, writes the audio under
``var/``, and stops the mesh; its exit code says whether the call went well.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import functools
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from common import healthcheck
from common.dev_ca import mesh_pki
from gateway.mesh_state import LocalState, seed_demo_tenant
from gateway.mesh_supervisor import Supervisor
from tenant_svc.rest.local import LocalPortal  # the REST front + portal (issue 18)

# (package, log name, port offset from --base-port); started in this order, stopped in reverse.
SERVICES = (
    ("stt_svc", "stt", 1),
    ("llm_svc", "llm", 2),
    ("tts_svc", "tts", 3),
    ("tenant_svc", "tenant", 4),
    ("gateway", "gateway", 0),
)
DEMO_SCRIPT = (
    ("Hi, I'd like to book a cleaning for next Tuesday.", None),
    ("Sorry, what are your opening hours?", 1500),  # talks over the agent's reply
    ("Great, thank you. Goodbye.", None),
)
# Lines the services log themselves ("10:29:54.681 I stt ...") already name their service.
_OWN_LOG_LINE = re.compile(rb"^\d\d:\d\d:\d\d\.\d{3} [A-Z] ")
_PR_SET_PDEATHSIG = 1
_print_lock = threading.Lock()


def say(text: str = "", stream: IO[str] | None = None) -> None:
    """Print whole lines only: child logs are printed from other threads."""
    with _print_lock:
        out = stream or sys.stdout
        out.write(text + "\n")
        out.flush()


def _load_prctl() -> Callable[..., int] | None:
    # Resolved before any fork: the child between fork and exec must not load libraries.
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_prctl = _load_prctl()


def _die_with_parent(parent_pid: int) -> None:
    """Runs in the child before exec: SIGTERM when the launcher dies, however it dies."""
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent_pid:  # the launcher died before prctl took effect
        os._exit(1)


class MeshError(RuntimeError):
    """A service did not come up, or died: which one, why, and what it logged last."""


@dataclass
class Service:
    """One child process of the mesh, its address and the tail of its log."""

    package: str
    name: str
    address: str
    popen: subprocess.Popen[bytes] | None = None
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=15))
    pump: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self.address.rsplit(":", 1)[1])

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def last_lines(self) -> str:
        return "\n".join(f"    {line}" for line in self.tail) or "    (it logged nothing)"

    def pump_log(self) -> None:
        """Copy the child's output to ours line by line, keeping the last lines for errors."""
        assert self.popen is not None and self.popen.stdout is not None
        prefix = f"{self.name:<7} | ".encode()
        for raw in self.popen.stdout:
            line = raw.rstrip(b"\r\n")
            self.tail.append(line.decode(errors="replace"))
            say((line if _OWN_LOG_LINE.match(line) else prefix + line).decode(errors="replace"))


class Mesh:
    """The four processes of a local mesh: started together, ready-checked, stopped gateway-first."""

    def __init__(
        self,
        ports: dict[str, int],
        host: str = "127.0.0.1",
        grace_s: float = 5.0,
        state_dir: Path = Path("var"),
    ) -> None:
        self.host = host
        self.grace_s = grace_s
        self.services = [Service(pkg, name, f"{host}:{ports[name]}") for pkg, name, _ in SERVICES]
        self.state = LocalState(state_dir)
        # mTLS unless VOICEAI_TLS=off: a dev CA and a certificate per service under var/tls. The
        # launcher itself (health checks, seeding, the demo call) acts as the REST front.
        self.pki = mesh_pki(state_dir, dict(os.environ))
        if self.pki is not None:
            os.environ.update(self.pki.env_for("rest"))

    def address(self, name: str) -> str:
        return next(s.address for s in self.services if s.name == name)

    def start(self) -> None:
        """Spawn every service at once (their models load in parallel); raises if a port is taken."""
        for s in self.services:
            _check_port_free(self.host, s.port, s.package)
        self.state.start()
        env = {
            **self.state.env,
            "VOICEAI_WORKERS": "1",  # one gateway process under the launcher unless told otherwise
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "VOICEAI_HOST": self.host,
            "VOICEAI_STT_ADDRESSES": self.address("stt"),
            "VOICEAI_LLM_ADDRESSES": self.address("llm"),
            "VOICEAI_TTS_ADDRESSES": self.address("tts"),
            "VOICEAI_TENANT_ADDRESSES": self.address("tenant"),
            # A short drain: stop() waits this long plus a margin before it kills (the
            # gateway's own default is ten minutes, meant for production calls).
            "VOICEAI_GRACE_PERIOD_S": str(self.grace_s),
        }
        env.pop("VOICEAI_PORT", None)  # each child gets its own --port
        self._env = env
        for s in self.services:
            self._fork(s)
        for s in self.services:  # threads only after every fork
            self._start_pump(s)

    def _fork(self, s: Service) -> None:
        s.popen = subprocess.Popen(
            [sys.executable, "-m", s.package, "--port", str(s.port)],
            env=self._env | (self.pki.env_for(s.name) if self.pki else {}),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            # Own process group: a terminal's Ctrl-C reaches the launcher only, which stops
            # the services in order (gateway first) instead of all of them at once.
            process_group=0,
            # preexec_fn only calls a prctl resolved before forking, and no thread runs yet.
            preexec_fn=functools.partial(_die_with_parent, os.getpid()),  # noqa: PLW1509
        )

    @staticmethod
    def _start_pump(s: Service) -> None:
        s.pump = threading.Thread(target=s.pump_log, name=f"log-{s.name}", daemon=True)
        s.pump.start()

    def respawn(self, s: Service) -> None:
        """Start ``s`` again after it died (``gateway.mesh_supervisor`` decides when)."""
        self._wait_pump(s)
        self._fork(s)  # the launcher's own threads fork here too: the child only execs
        self._start_pump(s)

    def wait_ready(self, timeout_s: float, stop: threading.Event) -> bool:
        """Block until every service is SERVING; False if ``stop`` was set first.

        The services start together, so waiting for them in turn takes as long as the slowest;
        every poll checks all of them, so one that dies is reported at once, not after the others.
        """
        deadline = time.monotonic() + timeout_s

        def all_running() -> bool:
            return not stop.is_set() and all(s.alive() for s in self.services)

        for s in self.services:
            try:
                healthcheck.wait_serving(
                    s.address, max(0.1, deadline - time.monotonic()), alive=all_running, server_name=s.name
                )
            except RuntimeError:
                if stop.is_set():
                    return False
                dead = self.first_exited()
                if dead is not None:
                    self._wait_pump(dead)
                    code = dead.popen.returncode if dead.popen else None
                    raise MeshError(
                        f"{dead.package} exited with code {code} before it was ready. Its last lines:\n"
                        + dead.last_lines()
                    ) from None
                raise MeshError(
                    f"{s.package} at {s.address} was not SERVING after {timeout_s:.0f} s. Its last lines:\n"
                    + s.last_lines()
                ) from None
        return True

    def first_exited(self) -> Service | None:
        return next((s for s in self.services if s.popen is not None and not s.alive()), None)

    def stop(self) -> None:
        """SIGTERM in reverse order (gateway first: it drains calls while the services still run)."""
        for s in reversed(self.services):
            if s.popen is None:
                continue
            if s.alive():
                s.popen.send_signal(signal.SIGTERM)
            try:
                s.popen.wait(self.grace_s + 5.0)
            except subprocess.TimeoutExpired:
                say(f"  {s.package} did not stop within {self.grace_s + 5.0:.0f} s; killing it")
                s.popen.kill()
                s.popen.wait()
            self._wait_pump(s)
        self.state.stop()

    @staticmethod
    def _wait_pump(s: Service) -> None:
        if s.pump is not None:
            s.pump.join(timeout=2.0)


def _check_port_free(host: str, port: int, package: str) -> None:
    """Fail before anything starts when a port is taken (say, by a mesh already running)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gRPC binds: TIME_WAIT is fine
        try:
            probe.bind((host, port))
        except OSError as e:
            raise MeshError(
                f"{package} cannot listen on {host}:{port} ({e.strerror}): is a mesh already running?"
                " Stop it, or pick other ports with --base-port."
            ) from None


# ---------------------------------------------------------------------------------- demo
def run_demo(gateway: str, out_dir: Path, stop: _StopSignal) -> int:
    """Place the scripted call; print the conversation and timings; write the WAVs. Exit code."""
    from gateway.cli import CallOptions, CallReport, Utterance, format_report, place_call
    from gateway.cli.credentials import HOW_TO, authorization_for
    from gateway.wav import stereo_timeline, write_pcm16

    script = [Utterance(text, barge_in_after_ms=barge_in) for text, barge_in in DEMO_SCRIPT]
    say("\n== demo call: a caller phones Bright Smile Dental (3 turns, talks over the agent once) ==\n")

    async def call() -> CallReport:
        task, loop = asyncio.current_task(), asyncio.get_running_loop()
        assert task is not None
        stop.on_signal = lambda: loop.call_soon_threadsafe(task.cancel)  # Ctrl-C ends the call now
        try:
            if stop.is_set():
                raise asyncio.CancelledError
            # The services created the dev key at start-up (dev mode): a token for the demo tenant.
            options = CallOptions(gateway=gateway, utterances=script, authorization=authorization_for("demo"))
            return await place_call(options)
        finally:
            stop.on_signal = None

    try:
        report = asyncio.run(call())
    except asyncio.CancelledError:
        say("  demo call interrupted")
        return 130
    say(format_report(report))
    if report.status in ("UNAUTHENTICATED", "PERMISSION_DENIED"):
        say(f"  the gateway refused the demo's credential: {HOW_TO}")
    agent = write_pcm16(out_dir / "demo-agent.wav", report.agent_audio, report.rate)
    both = stereo_timeline(report.caller_chunks, report.agent_chunks, report.rate)
    whole = write_pcm16(out_dir / "demo-call.wav", both, report.rate, channels=2)
    say(f"\n  audio: {agent} (the agent), {whole} (the whole call, stereo: caller left, agent right)")
    return 0 if report.ok else 1


# ---------------------------------------------------------------------------------- main
class _StopSignal:
    """Ctrl-C / SIGTERM / SIGHUP: remembered, and forwarded to whatever is running (the demo)."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.on_signal: Callable[[], object] | None = None

    def __call__(self, signum: int, _frame: object) -> None:
        self.event.set()
        if self.on_signal is not None:
            self.on_signal()

    def is_set(self) -> bool:
        return self.event.is_set()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The launcher's arguments."""
    p = argparse.ArgumentParser(prog="python -m gateway.mesh", description=__doc__)
    p.add_argument(
        "--base-port", type=int, default=50060, help="gateway port; stt, llm, tts, tenant use the next four"
    )
    for _pkg, name, _offset in SERVICES:
        p.add_argument(f"--{name}-port", type=int, default=None, help=f"override the {name} port")
    p.add_argument("--host", default="127.0.0.1", help="interface every service listens on")
    p.add_argument("--ready-timeout-s", type=float, default=120.0, help="longest wait for SERVING")
    p.add_argument("--grace-s", type=float, default=5.0, help="drain time on stop (VOICEAI_GRACE_PERIOD_S)")
    p.add_argument("--demo", action="store_true", help="place a scripted call, then stop")
    p.add_argument("--out-dir", default="var", help="where --demo writes its WAVs")
    p.add_argument("--portal", action="store_true", help="also start the REST front and portal (make run)")
    p.add_argument(
        "--state-dir", default="var", help="embedded PostgreSQL and Redis data (when not configured)"
    )
    return p.parse_args(argv)


def ports_from_args(args: argparse.Namespace) -> dict[str, int]:
    """Each service's port: ``--base-port`` plus its offset, unless given on its own."""
    ports = {name: args.base_port + offset for _pkg, name, offset in SERVICES}
    for name in ports:
        override = getattr(args, f"{name}_port")
        if override is not None:
            ports[name] = override
    return ports


def main(argv: list[str] | None = None) -> int:
    """Start the mesh (and the demo call, if asked); returns the exit status."""
    args = parse_args(argv)
    stop = _StopSignal()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, stop)
    mesh = Mesh(ports_from_args(args), args.host, args.grace_s, Path(args.state_dir))
    portal = LocalPortal(mesh.address("tenant"), args.host, gateway=mesh.address("gateway"))
    code = 0
    try:
        mesh.start()
        if not mesh.wait_ready(args.ready_timeout_s, stop.event):
            return 0  # stopped while starting
        try:
            say(f"  {seed_demo_tenant(mesh.address('tenant'))}")
        except Exception as e:  # the mesh runs, but the demo tenant's calls would be refused
            raise MeshError(f"could not create the demo tenant in tenant_svc: {e}") from e
        if args.portal:
            say(portal.start("demo"))
        say(f"\n  voiceai-mesh is up ({'mTLS, CA ' + str(mesh.pki.ca_cert) if mesh.pki else 'PLAINTEXT'}):")
        for s in reversed(mesh.services):  # the gateway, the one callers use, first
            say(f"    {s.package:<8} {s.address}")
        say("")
        if args.demo:
            code = run_demo(mesh.address("gateway"), Path(args.out_dir), stop)
        else:
            gateway = mesh.address("gateway")
            say(
                f"  place a call:  .venv/bin/voiceai call --gateway {gateway} --say 'What are your opening hours?'"
            )
            say("  Ctrl-C stops the mesh.\n")
            supervisor = Supervisor(mesh)  # issue 15: a child that dies is restarted, with backoff
            while not stop.event.wait(0.2):
                supervisor.check()
    except MeshError as e:
        say(f"\n  voiceai-mesh: {e}", sys.stderr)
        code = 1
    finally:
        portal.stop()
        if any(s.popen is not None for s in mesh.services):
            say("\n  stopping the mesh (gateway first)")
            mesh.stop()
            say("  stopped")
    return code


if __name__ == "__main__":
    sys.exit(main())
