"""Agent configs from tenant_svc and inline configs keep their provider chains and models."""

from __future__ import annotations

import pytest

from common.errors import InvalidArgument
from common.gen.voiceai.gateway.v1 import gateway_pb2
from common.gen.voiceai.tenant.v1 import resources_pb2
from gateway.agents import agent_from_proto
from gateway.tenancy import agent_from_tenant


def test_tenant_agent_keeps_chains_and_models() -> None:
    stored = resources_pb2.Agent(
        system_prompt="Be brief.",
        stt_providers=["deepgram", "local"],
        stt_model="nova-3",
        llm_providers=["openai", "local"],
        llm_model="gpt-4o-mini",
        tts_providers=["deepgram", "local"],
        tts_model="aura-2",
        voice="aura-2-thalia-en",
    )
    agent = agent_from_tenant(stored, "sales")
    assert agent.stt_providers == ("deepgram", "local") and agent.stt_model == "nova-3"
    assert agent.llm_providers == ("openai", "local") and agent.llm_model == "gpt-4o-mini"
    assert agent.tts_providers == ("deepgram", "local") and agent.tts_model == "aura-2"
    assert agent.voice == "aura-2-thalia-en"


def test_inline_agent_chains_are_checked() -> None:
    cfg = gateway_pb2.AgentConfig(stt_providers=["deepgram"], tts_model="x" * 201)
    with pytest.raises(InvalidArgument, match="tts_model is over 200"):
        agent_from_proto(cfg)
    cfg = gateway_pb2.AgentConfig(llm_providers=["openai", "anthropic"])
    with pytest.raises(
        InvalidArgument, match="llm_providers: unknown provider 'anthropic'; use local, openai"
    ):
        agent_from_proto(cfg)
    assert agent_from_proto(gateway_pb2.AgentConfig()).stt_providers == ()
