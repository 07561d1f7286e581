"""Each service, run as `python -m <service>`, answers the real grpcurl binary: reflection lists
it, health says SERVING (no credentials needed), and it stops cleanly on SIGTERM."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.bench import procs
from tests.credentials import internal_bearer, token

GRPCURL = shutil.which("grpcurl", path=str(Path(sys.executable).parent)) or "grpcurl"

SERVICES = [
    ("stt_svc", "voiceai.stt.v1.SpeechToTextService"),
    ("llm_svc", "voiceai.llm.v1.LanguageModelService"),
    ("tts_svc", "voiceai.tts.v1.TextToSpeechService"),
    ("gateway", "voiceai.gateway.v1.CallGatewayService"),
    ("tenant_svc", "voiceai.tenant.v1.TenantService"),
]


def grpcurl(*args: str) -> str:
    done = subprocess.run(
        [GRPCURL, "-plaintext", *args], capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.slow
@pytest.mark.parametrize(("module", "service"), SERVICES)
def test_service_answers_grpcurl_and_stops_on_sigterm(module: str, service: str, tmp_path: Path) -> None:
    env = {"VOICEAI_USE_UVLOOP": "1", "VOICEAI_PG_DATA_DIR": str(tmp_path / "pg")}
    with procs.start(module, module, env) as proc:
        listed = grpcurl(proc.address, "list").split()
        assert service in listed and "grpc.health.v1.Health" in listed
        assert json.loads(grpcurl(proc.address, "grpc.health.v1.Health/Check"))["status"] == "SERVING"
        if module == "llm_svc":
            out = grpcurl(
                "-H",
                "x-tenant-id:demo",
                "-H",
                "x-call-id:grpcurl-1",
                "-H",
                # llm_svc is internal: it takes the gateway's internal token for this call only.
                f"authorization:{internal_bearer('llm', 'grpcurl-1', 'demo')[1]}",
                "-d",
                '{"messages":[{"role":"ROLE_USER","content":"hello"}]}',
                proc.address,
                "voiceai.llm.v1.LanguageModelService/StreamChat",
            )
            assert '"delta"' in out and '"done"' in out and "offline-responder" in out
        if module == "tenant_svc":
            platform = f"authorization:Bearer {token(None, ('platform',))}"
            body = '{"tenant_id":"grpcurl-co","tenant":{"display_name":"Grpcurl Co"}}'
            created = grpcurl("-H", platform, "-d", body, proc.address, f"{service}/CreateTenant")
            assert '"name": "tenants/grpcurl-co"' in created
            listed = grpcurl("-H", platform, proc.address, f"{service}/ListTenants")
            assert "tenants/grpcurl-co" in listed
        proc.popen.send_signal(signal.SIGTERM)
        assert proc.popen.wait(15) == 0
