"""Several gateway worker processes behind one listening address (``python -m gateway --workers N``).

One Python event loop is the gateway's limit long before the machine's cores are (issue 21), so
the gateway can run as a small process group: a supervisor and N workers, each a whole gateway
(its own event loop, pacer, clients and pools) listening on the same address with SO_REUSEPORT,
so the kernel balances callers' connections over them. The supervisor:

- holds the port for the group (a bound, never listening SO_REUSEPORT socket: it gets no
  connection, and nothing else can take the port while a worker is being replaced);
- starts the workers and knows each is ready when it reports SERVING on a pipe;
- registers the group once with Consul (when configured) and deregisters it as a drain begins;
- serves one /metrics for the group on ``metrics_port`` (prometheus-client multiprocess mode:
  counters and histograms summed over workers, gauges per worker ``pid``);
- replaces a worker that dies (only the calls on that worker end; their callers see
  UNAVAILABLE and the supervisor logs which worker died and how);
- on SIGTERM/SIGINT, SIGTERMs every worker, each drains its own calls within the grace period,
  and exits once all have stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import logging
import math
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from common.consul import ConsulRegistration
    from common.settings import ServiceSettings

log = logging.getLogger("gateway.workers")

_PR_SET_PDEATHSIG = 1
READY = b"ready\n"
# A worker that dies sooner than this after starting is restarted after a pause, not at once.
_FAST_DEATH_S = 5.0
_RESTART_PAUSE_S = 1.0


def default_workers() -> int:
    """The cores this process may use: its CPU affinity, capped by a cgroup CPU quota."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    quota = cgroup_cpu_quota()
    if quota is not None:
        cores = min(cores, max(1, math.ceil(quota)))
    return max(1, cores)


def cgroup_cpu_quota(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """CPUs granted by the cgroup's quota (v2 ``cpu.max`` or v1 ``cfs_quota_us``), None if unlimited."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        q = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        p = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return None if q <= 0 or p <= 0 else q / p
    except (OSError, ValueError):
        return None


@dataclass(frozen=True)
class WorkerRole:
    """How a worker process was started by its supervisor (from its hidden command-line flags)."""

    index: int
    supervisor_pid: int
    ready_fd: int

    def die_with_supervisor(self) -> None:
        """SIGTERM this worker when the supervisor dies, however it dies (Linux prctl)."""
        if sys.platform.startswith("linux"):
            with contextlib.suppress(OSError, AttributeError):
                ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != self.supervisor_pid:  # it died before prctl took effect
            raise SystemExit(f"gateway worker {self.index}: supervisor {self.supervisor_pid} is gone")

    def report_ready(self) -> None:
        """Tell the supervisor this worker is SERVING (once)."""
        try:
            os.write(self.ready_fd, READY)
        finally:
            os.close(self.ready_fd)


def freeze_after_start() -> None:
    """Move everything built at start-up (app, pools, clients, caches) out of the collector's
    sight, so gen-2 collections under load traverse only what calls allocate."""
    gc.collect()
    gc.freeze()


def reserve_port(host: str, port: int) -> socket.socket:
    """Bind (not listen) an SO_REUSEPORT socket on ``host:port``; port 0 picks a free one."""
    bare = host.strip("[]")
    family = socket.AF_INET6 if ":" in bare else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((bare, port))
    except OSError as e:
        sock.close()
        raise SystemExit(f"gateway: cannot bind {host}:{port} for its workers: {e.strerror}") from None
    return sock


class _Slot:
    """One worker position: the process currently filling it."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.proc: asyncio.subprocess.Process | None = None
        self.started = 0.0
        self.ready = asyncio.Event()


class Supervisor:
    """Runs N gateway workers on one address until SIGTERM, replacing any that dies."""

    def __init__(self, settings: ServiceSettings, workers: int, worker_argv: list[str]) -> None:
        self.settings = settings
        self.workers = workers
        # argv that starts one worker, without --port and the worker flags (added per worker).
        self.worker_argv = worker_argv
        self.port = 0
        self.replaced = 0
        self._slots = [_Slot(i) for i in range(workers)]
        self._stopping = asyncio.Event()
        self._failed: str = ""
        self._metrics_dir = ""

    @property
    def pids(self) -> list[int]:
        """The live workers' process ids, by slot."""
        return [s.proc.pid for s in self._slots if s.proc is not None and s.proc.returncode is None]

    async def run(self) -> int:
        """Serve until SIGTERM/SIGINT (exit code 0) or until a worker cannot start (1)."""
        reservation = reserve_port(self.settings.host, self.settings.port)
        self.port = reservation.getsockname()[1]
        self._metrics_dir = tempfile.mkdtemp(prefix="voiceai-gateway-metrics-")
        metrics = self._start_metrics()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stopping.set)
        registration = None
        keepers = [asyncio.create_task(self._keep(s), name=f"gateway-worker-{s.index}") for s in self._slots]
        try:
            ready = asyncio.create_task(self._all_ready())
            stop = asyncio.create_task(self._stop_requested())
            await asyncio.wait([ready, stop], return_when=asyncio.FIRST_COMPLETED)
            if not stop.done():
                log.info(
                    "serving on %s:%d with %d workers (pids %s)",
                    self.settings.host,
                    self.port,
                    self.workers,
                    ",".join(map(str, self.pids)),
                )
                registration = await self._register()
                await stop
            ready.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ready
            log.info("draining %d workers", len(self.pids))
            if registration is not None:
                await registration.deregister()
            await self._stop_workers()
        finally:
            # Also on an error (a refused Consul registration): no worker outlives the group.
            self._stopping.set()
            await self._stop_workers()
            for task in keepers:
                task.cancel()
            await asyncio.gather(*keepers, return_exceptions=True)
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
            if metrics is not None:
                metrics.shutdown()
                metrics.server_close()
            reservation.close()
            shutil.rmtree(self._metrics_dir, ignore_errors=True)
        if self._failed:
            log.error("%s", self._failed)
            return 1
        log.info("all workers stopped")
        return 0

    async def _all_ready(self) -> None:
        await asyncio.gather(*(s.ready.wait() for s in self._slots))

    async def _stop_requested(self) -> None:
        await self._stopping.wait()

    async def _spawn(self, slot: _Slot) -> asyncio.StreamReader:
        read_fd, write_fd = os.pipe()
        argv = [
            *self.worker_argv,
            "--port",
            str(self.port),
            "--worker-index",
            str(slot.index),
            "--worker-of",
            str(os.getpid()),
            "--ready-fd",
            str(write_fd),
        ]
        env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": self._metrics_dir}
        try:
            slot.proc = await asyncio.create_subprocess_exec(
                *argv, env=env, pass_fds=(write_fd,), stdin=asyncio.subprocess.DEVNULL
            )
        finally:
            os.close(write_fd)
        slot.started = time.monotonic()
        reader = asyncio.StreamReader()
        loop = asyncio.get_running_loop()
        await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(read_fd, "rb", buffering=0)
        )
        return reader

    async def _keep(self, slot: _Slot) -> None:
        """Keep ``slot`` filled until the group stops."""
        while not self._stopping.is_set():
            reader = await self._spawn(slot)
            proc = slot.proc
            assert proc is not None
            said = await reader.read(len(READY))
            if said == READY:
                slot.ready.set()
            code = await proc.wait()
            if self._stopping.is_set():
                return
            self._forget(proc.pid)
            how = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
            if not slot.ready.is_set():
                self._failed = f"gateway worker {slot.index} (pid {proc.pid}) failed to start ({how})"
                self._stopping.set()
                return
            lived = time.monotonic() - slot.started
            log.error(
                "gateway worker %d (pid %d) died (%s) after %.0f s; the calls it carried ended; "
                "starting a replacement",
                slot.index,
                proc.pid,
                how,
                lived,
            )
            self.replaced += 1
            if lived < _FAST_DEATH_S:
                await asyncio.sleep(_RESTART_PAUSE_S)

    async def _stop_workers(self) -> None:
        """SIGTERM every worker; each drains its calls; kill what outlives the grace period."""
        procs = [s.proc for s in self._slots if s.proc is not None and s.proc.returncode is None]
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        waits = [asyncio.ensure_future(p.wait()) for p in procs]
        if not waits:
            return
        _done, late = await asyncio.wait(waits, timeout=self.settings.grace_period_s + 30.0)
        for proc in procs:
            if proc.returncode is None:
                log.error("gateway worker pid %d outlived its drain; killing it", proc.pid)
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
        if late:
            await asyncio.gather(*late, return_exceptions=True)

    def _forget(self, pid: int) -> None:
        """A dead worker's gauges leave /metrics (its counters and histograms stay in the sums)."""
        from prometheus_client import multiprocess

        with contextlib.suppress(OSError):
            multiprocess.mark_process_dead(pid, self._metrics_dir)  # the live* gauge modes
        # Gauges in the default "all" mode (calls in progress) keep a file per pid: without this
        # a dead worker's last value would count toward the pod's calls for the HPA forever.
        for path in Path(self._metrics_dir).glob(f"gauge_*_{pid}.db"):
            path.unlink(missing_ok=True)

    def _start_metrics(self) -> WSGIServer | None:
        if self.settings.metrics_port < 0:
            return None
        from prometheus_client import CollectorRegistry, multiprocess, start_http_server

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=self._metrics_dir)
        server, _thread = start_http_server(
            self.settings.metrics_port, addr=self.settings.host.strip("[]"), registry=registry
        )
        return server

    async def _register(self) -> ConsulRegistration | None:
        from common.consul import ConsulRegistration, ConsulSettings

        consul = ConsulSettings()
        if not consul.enabled:
            return None
        reg = ConsulRegistration(
            consul, "gateway", "voiceai.gateway.v1.CallGatewayService", self.settings.host
        )
        await reg.register(self.port)
        return reg
