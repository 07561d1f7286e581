"""Starts a gateway wired to scripted STT/LLM/TTS doubles, all on loopback."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from common.discovery import StaticResolver
from common.gen.voiceai.gateway.v1 import gateway_pb2
from common.gen.voiceai.llm.v1 import llm_pb2_grpc
from common.gen.voiceai.stt.v1 import stt_pb2_grpc
from common.gen.voiceai.tts.v1 import tts_pb2_grpc
from common.load import CapacitySettings, attach_capacity
from common.redis_conn import RedisSettings
from common.server import ServiceBinding, ServiceHost
from common.settings import DiscoverySettings, ServiceSettings
from gateway.agents import Agent, TurnTakingProfile
from gateway.app import GatewayApp, Settings
from tests.caller import linear16
from tests.doubles.mesh_services import ScriptedLlm, ScriptedStt, ToneTts


@dataclass
class Mesh:
    stt: ScriptedStt
    llm: ScriptedLlm
    tts: ToneTts
    app: GatewayApp
    address: str

    def open_streams(self) -> int:
        return self.stt.streams.open + self.llm.streams.open + self.tts.streams.open


def scripted_services(stt: ScriptedStt, llm: ScriptedLlm, tts: ToneTts) -> ServiceHost:
    """One host serving the STT, LLM and TTS doubles (not started)."""
    return ServiceHost(
        ServiceSettings(),
        [
            ServiceBinding(
                "voiceai.stt.v1.SpeechToTextService",
                lambda s: stt_pb2_grpc.add_SpeechToTextServiceServicer_to_server(stt, s),
            ),
            ServiceBinding(
                "voiceai.llm.v1.LanguageModelService",
                lambda s: llm_pb2_grpc.add_LanguageModelServiceServicer_to_server(llm, s),
            ),
            ServiceBinding(
                "voiceai.tts.v1.TextToSpeechService",
                lambda s: tts_pb2_grpc.add_TextToSpeechServiceServicer_to_server(tts, s),
            ),
        ],
    )


@contextlib.asynccontextmanager
async def scripted_mesh(
    stt: ScriptedStt,
    llm: ScriptedLlm | None = None,
    tts: ToneTts | None = None,
    *,
    agents: list[Agent] | None = None,
    outbox_limit: int = 500,
    services_up: bool = True,
    tenant_address: str = "",
    redis_url: str = "",
    max_streams: int = 0,
) -> AsyncIterator[Mesh]:
    """``tenant_address``/``redis_url``: run with tenancy (agents from tenant_svc, quotas, call
    records, Redis history) instead of the built-in catalog."""
    llm = llm or ScriptedLlm()
    tts = tts or ToneTts()
    doubles = scripted_services(stt, llm, tts)
    attach_capacity(doubles, CapacitySettings(max_streams=max_streams))  # 0: no limit
    port = await doubles.start()
    addr = f"127.0.0.1:{port}"
    if not services_up:
        await doubles.drain(0)
    tenant = [tenant_address] if tenant_address else []
    resolver = StaticResolver({"stt": [addr], "llm": [addr], "tts": [addr], "tenant": tenant})
    from gateway.agents import BuiltinAgentCatalog

    app = GatewayApp(
        Settings(outbox_limit=outbox_limit, grace_period_s=1.0),
        resolver,
        catalog=None if tenant_address else BuiltinAgentCatalog(agents),
        discovery=DiscoverySettings(tenant_addresses=tenant_address),
        redis_settings=RedisSettings(url=redis_url),
    )
    gw_port = await app.start()
    try:
        yield Mesh(stt, llm, tts, app, f"127.0.0.1:{gw_port}")
    finally:
        await app.drain(0.5)
        if services_up:
            await doubles.drain(0.5)


def inline_config(
    greeting: str = "",
    rate: int = 16000,
    **turn_taking: int,
) -> gateway_pb2.CallConfig:
    tt = gateway_pb2.TurnTaking(**turn_taking)
    return gateway_pb2.CallConfig(
        agent=gateway_pb2.AgentConfig(system_prompt="Test agent.", greeting=greeting, turn_taking=tt),
        caller_audio_format=linear16(rate),
    )


FAST = TurnTakingProfile()
