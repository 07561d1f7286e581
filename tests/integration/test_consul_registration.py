"""Consul registration through the real py-consul client against the Consul API double: what an
instance registers, the drain order (NOT_SERVING -> deregister -> refuse new -> finish open),
the ``python -m`` entry point, and the ACL token (sent on every request, never logged)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import grpc.aio
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from common.consul import ConsulSettings, register_with_consul
from common.consul_resolver import ConsulResolver, resolver_from_settings
from common.discovery import StaticResolver
from common.errors import Unavailable
from common.gen.voiceai.llm.v1 import llm_pb2, llm_pb2_grpc
from common.settings import DiscoverySettings
from tests.conftest import llm_md as md
from tests.doubles.consul_api import ConsulApiDouble
from tests.integration.consul_harness import (
    LLM,
    TOKEN,
    chat,
    consul_double,
    consul_settings,
    eventually,
    llm_host,
    registered_llm,
)

ROOT = Path(__file__).resolve().parents[2]
GRPC_NAME = "voiceai.llm.v1.LanguageModelService"


@pytest.fixture
def api() -> Iterator[ConsulApiDouble]:
    with consul_double() as double:
        yield double


async def test_registration_carries_name_address_port_tags_meta_and_grpc_check(api: ConsulApiDouble) -> None:
    settings = consul_settings(api, zone="eu-1a", gpu=True, tags="canary", meta={"team": "voice"})
    async with registered_llm(api, settings, passing=False) as (addr, reg, _host):
        [svc] = api.instances(LLM)
        port = int(addr.rsplit(":", 1)[1])
        assert svc["ID"] == reg.service_id and svc["ID"].startswith(f"voiceai-llm-127.0.0.1-{port}-")
        assert (svc["Address"], svc["Port"]) == ("127.0.0.1", port)
        assert svc["Tags"] == [f"version={settings.version}", "zone=eu-1a", "gpu", "canary"]
        assert svc["Meta"] == {"team": "voice", "version": settings.version, "zone": "eu-1a", "gpu": "true"}
        check = api.checks[f"service:{reg.service_id}"]
        assert check["Definition"] == {
            "Name": f"gRPC health of {GRPC_NAME}",
            "GRPC": f"{addr}/{GRPC_NAME}",
            "GRPCUseTLS": False,
            "Interval": "1s",
            "Timeout": "2s",
            "DeregisterCriticalServiceAfter": "1m",
        }
        assert check["Status"] == "critical"  # as a real agent: critical until the check has run
        await asyncio.to_thread(api.check_now)  # the real grpc.health.v1 check against the host
        assert api.checks[f"service:{reg.service_id}"]["Status"] == "passing"
        register = next(s for s in api.seen if s.path == "/v1/agent/service/register")
        assert register.method == "PUT" and register.headers["X-Consul-Token"] == TOKEN
        sid = reg.service_id
    assert api.instances(LLM) == []  # the drain deregistered it
    assert [e[1:] for e in api.events] == [("register", sid), ("passing", sid), ("deregister", sid)]


async def test_drain_deregisters_after_not_serving_while_still_accepting_then_finishes_open(
    api: ConsulApiDouble,
) -> None:
    """At the moment the agent hears the deregistration, the instance already reports
    NOT_SERVING yet still accepts a new stream; afterwards it refuses new ones, and a stream
    open before the drain runs to its end."""
    at_deregister: dict[str, object] = {}
    async with registered_llm(api, llm_token_delay_ms=60) as (addr, reg, host):

        def probe(service_id: str) -> None:  # runs in the agent's thread, before it answers
            with grpc.insecure_channel(addr) as ch:
                health = health_pb2_grpc.HealthStub(ch).Check(
                    health_pb2.HealthCheckRequest(service=GRPC_NAME)
                )
                at_deregister["health"] = health.status
                req = llm_pb2.StreamChatRequest(
                    messages=[llm_pb2.ChatMessage(role=llm_pb2.ROLE_USER, content="hi")],
                    responder_rules=llm_pb2.ResponderRules(default_reply="Yes."),
                )
                stream = llm_pb2_grpc.LanguageModelServiceStub(ch).StreamChat(req, metadata=md(), timeout=5)
                at_deregister["new_stream"] = "".join(r.delta.text for r in stream)

        api.on_deregister.append(probe)
        async with grpc.aio.insecure_channel(addr) as ch:
            long_reply = " ".join(["word"] * 15) + "."  # ~1 s at 60 ms a word
            open_stream = asyncio.ensure_future(chat(ch, long_reply))
            await asyncio.sleep(0.2)
            await host.drain(grace=10.0)
            assert await open_stream == long_reply  # finished inside the grace period
        with pytest.raises(grpc.aio.AioRpcError):
            async with grpc.aio.insecure_channel(addr) as ch:
                await asyncio.wait_for(chat(ch), 2)
    assert at_deregister == {"health": health_pb2.HealthCheckResponse.NOT_SERVING, "new_stream": "Yes."}
    assert api.instances(LLM) == [] and ("deregister" in [e[1] for e in api.events])


def test_entry_point_registers_when_configured_and_deregisters_on_sigterm(api: ConsulApiDouble) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "CONSUL_HTTP_ADDR": f"http://{api.address}",
        "CONSUL_HTTP_TOKEN": TOKEN,
        "VOICEAI_CONSUL_ZONE": "z9",
        "VOICEAI_LOG_LEVEL": "DEBUG",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "llm_svc", "--port", "0"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = 60.0
        while not api.instances(LLM) and deadline > 0 and proc.poll() is None:
            time.sleep(0.05)
            deadline -= 0.05
        [svc] = api.instances(LLM)
        assert "zone=z9" in svc["Tags"]
        api.check_now()
        assert api.checks[f"service:{svc['ID']}"]["Status"] == "passing"
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, output
    assert api.instances(LLM) == [] and ("deregister", svc["ID"]) in [e[1:] for e in api.events]
    assert "consul: registered voiceai-llm" in output and "consul: deregistered" in output
    assert TOKEN not in output


async def test_nothing_configured_changes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("CONSUL_HTTP_ADDR", "VOICEAI_CONSUL_ADDR"):
        monkeypatch.delenv(name, raising=False)
    host = llm_host()
    assert register_with_consul(host, "llm_svc") is None
    assert host.on_serving == [] and host.on_draining == []
    resolver = resolver_from_settings(DiscoverySettings(llm_addresses="127.0.0.1:1"))
    assert isinstance(resolver, StaticResolver)
    assert [e.address for e in await resolver.resolve("llm")] == ["127.0.0.1:1"]
    monkeypatch.setenv("CONSUL_HTTP_ADDR", "127.0.0.1:8500")
    assert isinstance(resolver_from_settings(), ConsulResolver)


async def test_wildcard_bind_needs_an_advertise_address() -> None:
    settings = ConsulSettings(addr="127.0.0.1:8500")
    for wildcard in ("0.0.0.0", "::"):
        with pytest.raises(ValueError, match="VOICEAI_CONSUL_ADVERTISE_HOST"):
            register_with_consul(llm_host(host=wildcard), "llm_svc", settings)
    advertised = ConsulSettings(addr="127.0.0.1:8500", advertise_host="10.1.2.3")
    reg = register_with_consul(llm_host(host="0.0.0.0"), "llm_svc", advertised)
    assert reg is not None and reg.host == "10.1.2.3"


async def test_token_on_every_request_and_never_logged(
    api: ConsulApiDouble, caplog: pytest.LogCaptureFixture
) -> None:
    # Every logger that could see the token at DEBUG (ours, py-consul's HTTP stack), not grpc's:
    # grpc logs DEBUG from callbacks holding its own locks, and a collection in a consul thread
    # inside a handler can then deadlock the two (logs.configure pins grpc at INFO likewise).
    caplog.set_level(logging.WARNING, logger="grpc")
    caplog.set_level(logging.DEBUG)
    settings = consul_settings(api)
    assert TOKEN not in repr(settings) and TOKEN not in str(settings)
    resolver = ConsulResolver(settings)
    try:
        async with registered_llm(api, settings) as (addr, _reg, _host):
            assert [e.address for e in await resolver.resolve("llm")] == [addr]
            api.fail_next(1, path_prefix="/v1/health/")  # the error path logs too
            api.set_status(_reg.service_id, "warning")
            await eventually(lambda: "watching voiceai-llm again" in caplog.text)
    finally:
        await resolver.aclose()
    assert {s.path.split("/")[2] for s in api.seen} >= {"agent", "health"}
    assert all(s.headers.get("X-Consul-Token") == TOKEN for s in api.seen)
    assert TOKEN not in caplog.text


async def test_a_refused_token_fails_registration_at_once(api: ConsulApiDouble) -> None:
    host = llm_host()
    register_with_consul(host, "llm_svc", consul_settings(api, token="wrong", register_timeout_s=30))
    with pytest.raises(Exception, match="ACL not found"):
        await asyncio.wait_for(host.start(), 10)  # no 30 s of retries: 403 cannot get better
    await host.drain(0)
    assert api.instances(LLM) == []


async def test_agent_unreachable_at_start_fails_registration_after_retries(api: ConsulApiDouble) -> None:
    settings = consul_settings(api, register_timeout_s=0.5)
    api.stop()
    host = llm_host()
    register_with_consul(host, "llm_svc", settings)
    with pytest.raises(Unavailable, match="could not register voiceai-llm"):
        await host.start()
    await host.drain(0)
