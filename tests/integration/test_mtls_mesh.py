"""A whole call over mTLS on every hop (caller -> gateway -> stt/llm/tts, each service its own
host and certificate), and certificate rotation during that live call: the call goes on, the
next handshake gets the new certificate, and the gateway's next streams use its new one."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import common.discovery
import common.server
from common.auth import AuthSettings, build_auth
from common.discovery import StaticResolver
from common.gen.voiceai.gateway.v1 import gateway_pb2
from common.gen.voiceai.llm.v1 import llm_pb2_grpc
from common.gen.voiceai.stt.v1 import stt_pb2_grpc
from common.gen.voiceai.tts.v1 import tts_pb2_grpc
from common.redis_conn import RedisSettings
from common.server import ServiceBinding, ServiceHost
from common.settings import DiscoverySettings, ServiceSettings
from common.tls import ChannelFactory
from gateway.agents import BuiltinAgentCatalog
from gateway.app import GatewayApp, Settings
from tests.caller import ConverseCaller
from tests.doubles.mesh_services import ScriptedLlm, ScriptedStt, ToneTts, tone
from tests.integration.gateway_harness import inline_config
from tests.integration.tls_harness import Pki, client_channel, served_certificate


@dataclass
class TlsMesh:
    pki: Pki
    hosts: dict[str, ServiceHost]
    channels: ChannelFactory
    address: str
    llm: ScriptedLlm


@contextlib.asynccontextmanager
async def tls_mesh(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stt: ScriptedStt
) -> AsyncIterator[TlsMesh]:
    pki = Pki.create(tmp_path)
    llm, tts = ScriptedLlm(), ToneTts()
    bindings = {
        "stt": ServiceBinding(
            "voiceai.stt.v1.SpeechToTextService",
            lambda s: stt_pb2_grpc.add_SpeechToTextServiceServicer_to_server(stt, s),
        ),
        "llm": ServiceBinding(
            "voiceai.llm.v1.LanguageModelService",
            lambda s: llm_pb2_grpc.add_LanguageModelServiceServicer_to_server(llm, s),
        ),
        "tts": ServiceBinding(
            "voiceai.tts.v1.TextToSpeechService",
            lambda s: tts_pb2_grpc.add_TextToSpeechServiceServicer_to_server(tts, s),
        ),
    }
    # Each service checks the gateway's identity and internal tokens, as in a deployment.
    hosts = {
        name: ServiceHost(ServiceSettings(), [b], auth=build_auth(AuthSettings()), tls=pki.config(name))
        for name, b in bindings.items()
    }
    addresses = {name: [f"127.0.0.1:{await host.start()}"] for name, host in hosts.items()}
    # The gateway process's own TLS (what VOICEAI_TLS_* would give it).
    gateway_tls = pki.config("gateway")
    channels = ChannelFactory(gateway_tls)
    monkeypatch.setattr(common.server, "process_tls", lambda: gateway_tls)
    monkeypatch.setattr(common.discovery, "process_channels", lambda: channels)
    app = GatewayApp(
        Settings(grace_period_s=1.0),
        StaticResolver({**addresses, "tenant": []}),
        catalog=BuiltinAgentCatalog(),
        discovery=DiscoverySettings(tenant_addresses=""),
        redis_settings=RedisSettings(url=""),
    )
    assert app.host.tls.mutual and not app.host.require_client_cert  # the edge asks for none
    port = await app.start()
    try:
        yield TlsMesh(pki, hosts, channels, f"127.0.0.1:{port}", llm)
    finally:
        await app.drain(0.5)
        for host in hosts.values():
            await host.drain(0.5)


async def test_a_call_goes_on_through_certificate_rotation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stt = ScriptedStt(["hello there.", "what are your hours?", "thanks, goodbye."])
    async with tls_mesh(tmp_path, monkeypatch, stt) as mesh:
        stt_host = mesh.hosts["stt"]
        before = served_certificate(stt_host.port, mesh.pki).serial_number
        # The caller trusts the CA only (the edge asks for no client certificate).
        async with client_channel(mesh.address, mesh.pki, None, server_name="localhost") as ch:
            async with ConverseCaller(ch, inline_config()) as caller:
                await caller.send_pcm(tone(700))
                await caller.wait_for(caller.turn_done(1), timeout=10)

                # Rotate stt's server certificate and the gateway's client certificate mid-call.
                mesh.pki.write("stt")
                mesh.pki.write("gateway")
                await asyncio.sleep(0)
                after = served_certificate(stt_host.port, mesh.pki).serial_number
                assert after != before  # the next handshake got the new pair
                assert stt_host.certificates is not None and stt_host.certificates.reloads >= 1

                # The call's STT stream runs on, on its old connection; each new turn opens LLM
                # and TTS streams, on channels built with the gateway's new certificate.
                for turn in (2, 3):
                    await caller.send_pcm(tone(700))
                    await caller.wait_for(caller.turn_done(turn), timeout=10)
                assert mesh.channels.generation >= 1
                ended = await caller.hangup()
        assert ended.reason == gateway_pb2.END_REASON_CALLER_HANGUP and ended.turns == 3
        assert caller.error is None
        assert len(stt.configs) == 1  # one recognition stream for the whole call, never re-opened
        assert len(mesh.llm.script.requests) == 3
