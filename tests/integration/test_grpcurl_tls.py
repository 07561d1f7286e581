"""grpcurl against services running with mTLS and the dev CA (what `make run` creates): the
gateway's health and reflection need only `-cacert`; a service behind the edge also wants a
client certificate from the mesh CA, and still admits only the gateway to its API."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from common.dev_ca import ensure_dev_pki
from tests.bench.procs import ROOT, free_port
from tests.credentials import internal_bearer

GRPCURL = shutil.which("grpcurl", path=str(Path(sys.executable).parent)) or "grpcurl"


def grpcurl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([GRPCURL, *args], capture_output=True, text=True, timeout=30, check=False)


@pytest.mark.slow
@pytest.mark.parametrize("module", ["gateway", "llm_svc"])
def test_grpcurl_with_the_dev_ca(module: str, tmp_path: Path) -> None:
    pki = ensure_dev_pki(tmp_path / "tls")
    identity = "gateway" if module == "gateway" else "llm"
    port = free_port()
    env = {**os.environ, "PYTHONPATH": ROOT, "VOICEAI_LOG_LEVEL": "WARNING", **pki.env_for(identity)}
    out = open(tmp_path / "log", "wb")  # noqa: SIM115
    popen = subprocess.Popen(
        [sys.executable, "-m", module, "--port", str(port)], env=env, cwd=ROOT, stdout=out, stderr=out
    )
    address = f"localhost:{port}"
    ca = ["-cacert", str(pki.ca_cert)]
    operator = pki.identities["operator"]
    client = [] if module == "gateway" else ["-cert", str(operator.cert), "-key", str(operator.key)]
    try:
        deadline = time.monotonic() + 90
        while True:
            health = grpcurl(*ca, *client, address, "grpc.health.v1.Health/Check")
            if health.returncode == 0 and json.loads(health.stdout)["status"] == "SERVING":
                break
            assert popen.poll() is None and time.monotonic() < deadline, (tmp_path / "log").read_text()
            time.sleep(0.3)
        listed = grpcurl(*ca, *client, address, "list")
        assert listed.returncode == 0 and "grpc.health.v1.Health" in listed.stdout
        assert grpcurl("-plaintext", address, "list").returncode != 0  # plaintext to a TLS port
        if module == "llm_svc":
            # Without a client certificate the handshake fails; the operator's certificate opens
            # health and reflection only: the API admits the gateway alone, whatever the token.
            assert grpcurl(*ca, address, "list").returncode != 0
            refused = grpcurl(
                *ca,
                *client,
                "-H",
                "x-tenant-id:demo",
                "-H",
                "x-call-id:grpcurl-1",
                "-H",
                f"authorization:{internal_bearer('llm', 'grpcurl-1', 'demo')[1]}",
                "-d",
                '{"messages":[{"role":"ROLE_USER","content":"hello"}]}',
                address,
                "voiceai.llm.v1.LanguageModelService/StreamChat",
            )
            assert "PermissionDenied" in refused.stdout + refused.stderr
            assert "peer identity 'operator'" in refused.stdout + refused.stderr
        popen.send_signal(signal.SIGTERM)
        assert popen.wait(15) == 0
    finally:
        if popen.poll() is None:
            popen.kill()
            popen.wait()
        out.close()


@pytest.mark.parametrize("module", ["gateway", "llm_svc"])
def test_without_certificate_files_a_service_refuses_to_start_naming_the_settings(module: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOICEAI_TLS")}
    done = subprocess.run(
        [sys.executable, "-m", module, "--port", str(free_port())],
        env={**env, "PYTHONPATH": ROOT},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "VOICEAI_TLS_CERT_FILE" in done.stderr and "VOICEAI_TLS=off" in done.stderr
    assert "Traceback" not in done.stderr
