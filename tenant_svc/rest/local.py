"""The REST front and portal beside the local mesh (``make run``), with a dev sign-in link."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from common.auth import AuthSettings, dev_signing_key, mint_dev_token
from tenant_svc.rest.settings import RestSettings

# A dev sign-in lasts a working day; the key that signs it never leaves var/dev-auth.
DEV_TOKEN_TTL_S = 12 * 3600
_PR_SET_PDEATHSIG = 1


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def die_with_parent(parent_pid: int) -> None:
    """Linux: SIGTERM this process when ``parent_pid`` (the launcher) dies, even by SIGKILL."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent_pid:  # the launcher died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


class LocalPortal:
    """One ``python -m tenant_svc.rest`` child in front of the mesh's tenant_svc."""

    def __init__(
        self, tenant_address: str, host: str = "127.0.0.1", port: int | None = None, gateway: str = ""
    ) -> None:
        self.tenant_address = tenant_address
        self.gateway = gateway
        self.host = host
        self.port = port if port is not None else RestSettings().port
        self.popen: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The front's base URL."""
        return f"http://{self.host}:{self.port}"

    def start(self, tenant: str, timeout_s: float = 20.0) -> str:
        """Start the front and wait until it answers; the lines to print (URL, dev sign-in)."""
        if not _port_free(self.host, self.port):
            return f"  the portal cannot listen on {self.url}: the port is taken (set VOICEAI_REST_PORT)"
        env = {**os.environ, "VOICEAI_REST_HOST": self.host, "VOICEAI_REST_PARENT_PID": str(os.getpid())}
        if self.gateway:
            env["VOICEAI_REST_GATEWAY_ADDRESS"] = self.gateway
        self.popen = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tenant_svc.rest",
                "--port",
                str(self.port),
                "--tenant-address",
                self.tenant_address,
            ],
            env=env,
            stdin=subprocess.DEVNULL,
            process_group=0,  # Ctrl-C reaches the launcher, which stops the front itself
        )
        deadline = time.monotonic() + timeout_s
        while not self._answers():
            if self.popen.poll() is not None or time.monotonic() > deadline:
                return f"  the portal did not start on {self.url} (is the port taken? set VOICEAI_REST_PORT)"
            time.sleep(0.2)
        lines = [f"  portal + REST API: {self.url}/portal/   API reference: {self.url}/docs"]
        settings = AuthSettings()
        if settings.mode == "dev":
            key = dev_signing_key(Path(settings.dev_key_dir))
            token = mint_dev_token(
                key, tenant=tenant, roles=["admin"], ttl_s=DEV_TOKEN_TTL_S, subject="dev-admin"
            )
            lines.append(f"  dev sign-in ({tenant}, admin): {self.url}/portal/#token={token}&tenant={tenant}")
        return "\n".join(lines)

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/openapi.json", timeout=1) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def stop(self) -> None:
        """SIGTERM, then kill after 10 s."""
        if self.popen is None or self.popen.poll() is not None:
            return
        self.popen.terminate()
        try:
            self.popen.wait(10)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()
