"""Consul with TLS on: the instance is advertised as TLS and the agent's gRPC check is a real TLS
check (the server's certificate against the mesh CA and the service's name; the agent's own
certificate as the client's, since services behind the edge require one)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from common.consul import register_with_consul
from tests.conftest import running
from tests.doubles.consul_api import ConsulApiDouble
from tests.integration.consul_harness import consul_settings
from tests.integration.tls_harness import Pki, admission_host


async def test_registration_advertises_tls_and_the_check_speaks_it(tmp_path: Path) -> None:
    pki = Pki.create(tmp_path)
    pki.write("gateway", name="consul-agent-rogue", authority=pki.rogue)
    ca = (tmp_path / "ca.pem").read_bytes()
    cert, key = pki.bytes_of("tenant")  # any mesh certificate: health is exempt from identity rules
    rogue_cert, rogue_key = pki.bytes_of("consul-agent-rogue")
    agents = {
        "mesh": ConsulApiDouble(tls=(ca, cert, key)),
        "no client certificate": ConsulApiDouble(tls=(ca, b"", b"")),
        "another CA": ConsulApiDouble(tls=(ca, rogue_cert, rogue_key)),
    }
    for api in agents.values():
        api.start()
    try:
        for label, api in agents.items():
            host = admission_host("stt", pki.config("stt"))
            reg = register_with_consul(host, "stt", consul_settings(api))
            assert reg is not None
            async with running(host) as addr:
                check = api.checks[f"service:{reg.service_id}"]["Definition"]
                assert check["GRPCUseTLS"] is True and check["TLSServerName"] == "stt"
                assert "tls" in api.instances("voiceai-stt")[0]["Tags"]
                await asyncio.to_thread(api.check_now)
                status = api.checks[f"service:{reg.service_id}"]["Status"]
                assert status == ("passing" if label == "mesh" else "critical"), (label, addr)
    finally:
        for api in agents.values():
            api.stop()
