"""Issue 5's headline, end to end: a tenant's agent runs on Deepgram Nova-3 (STT), OpenAI (LLM)
and Deepgram Aura-2 or ElevenLabs (TTS), each real SDK talking to its protocol double on
loopback, through the real stt_svc, llm_svc, tts_svc and gateway, with tenancy (tenant_svc,
PostgreSQL, Redis) and fallback to the local engines when a provider fails mid-call.

The caller speaks tone words that the Deepgram double (and the local stand-in) really hears, the
OpenAI double echoes what it was sent, and the TTS doubles speak text-coded audio the caller can
read back: so each test follows the caller's words through every hop and back.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import grpc.aio
import pytest
from prometheus_client import REGISTRY

from common.gen.voiceai.gateway.v1 import gateway_pb2
from common.gen.voiceai.tenant.v1 import resources_pb2 as pb
from common.gen.voiceai.tenant.v1 import tenant_service_pb2 as svc
from common.providers import tenant_env_suffix
from stt_svc.providers import deepgram_stream
from tenant_svc.db.database import DatabaseSettings
from tests.caller import ConverseCaller, linear16
from tests.credentials import KEY_DIR, bearer
from tests.doubles.deepgram_api import ListenFault
from tests.doubles.deepgram_speak import Fault as SpeakFault
from tests.doubles.deepgram_speak import heard_text
from tests.doubles.openai_api import Fault as OpenAIFault
from tests.doubles.tone_words import speak
from tests.integration.cloud_harness import CloudMesh, cloud_doubles, cloud_mesh
from tests.integration.tenant_harness import TenantApi, tenant_api

FIRST = ["alpha", "bravo", "charlie"]
SECOND = ["delta", "echo", "foxtrot"]
AURA_VOICE = "aura-2-orion-en"  # not the service default (thalia): the agent's voice reached Deepgram
ELEVEN_VOICE = "21m00Tcm4TlvDq8ikWAM"
DEFAULTS = {
    "DEEPGRAM_API_KEY": "dg-default",
    "OPENAI_API_KEY": "sk-default",
    "ELEVENLABS_API_KEY": "el-default",
}


@pytest.fixture(scope="module")
async def api(database_settings: DatabaseSettings, redis_url: str) -> AsyncIterator[TenantApi]:
    async with tenant_api(database_settings, KEY_DIR, redis_url) as running:
        yield running


async def cloud_agent(
    api: TenantApi, tenant: str, agent_id: str, tts: str, voice: str, model: str
) -> pb.Agent:
    """A tenant agent created through TenantService, on cloud providers with local fallback."""
    agent = pb.Agent(
        system_prompt="Be brief.",
        greeting="Hello from the cloud.",
        voice=voice,
        language_code="en-US",
        stt_providers=["deepgram", "local"],
        stt_model="nova-3",
        llm_providers=["openai", "local"],
        llm_model="gpt-4o-mini",
        tts_providers=[tts, "local"],
        tts_model=model,
        keyterms=["Alpha"],
    )
    return await api.stub.CreateAgent(
        svc.CreateAgentRequest(parent=f"tenants/{tenant}", agent=agent, agent_id=agent_id),
        metadata=api.md(tenant, "admin"),
    )


def call_config(agent_id: str) -> gateway_pb2.CallConfig:
    return gateway_pb2.CallConfig(agent_id=agent_id, caller_audio_format=linear16(16000))


def caller_md(tenant: str) -> tuple[tuple[str, str], ...]:
    return (("x-tenant-id", tenant), bearer(tenant))


def finals(caller: ConverseCaller, turn: int) -> list[str]:
    return [
        r.msg.caller_transcript.text
        for r in caller.of("caller_transcript")
        if r.msg.caller_transcript.is_final and r.msg.caller_transcript.turn == turn
    ]


def said(caller: ConverseCaller, turn: int) -> str:
    return " ".join(
        r.msg.agent_speech.text for r in caller.of("agent_speech") if r.msg.agent_speech.turn == turn
    )


def words(text: str) -> list[str]:
    return [w.strip(".,:!?").lower() for w in text.split()]


def fallbacks(service: str, frm: str, to: str) -> float:
    """voiceai_provider_fallbacks_total for one switch, summed over its reasons."""
    wanted = {"service": service, "from_provider": frm, "to_provider": to}
    return sum(
        sample.value
        for metric in REGISTRY.collect()
        if metric.name == "voiceai_provider_fallbacks"
        for sample in metric.samples
        if sample.name.endswith("_total") and wanted.items() <= sample.labels.items()
    )


async def until(predicate: Callable[[], object], timeout_s: float = 5.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not predicate():  # noqa: ASYNC110 - a counter in a double
            await asyncio.sleep(0.01)


async def talk(caller: ConverseCaller, turn: int, spoken: list[str]) -> None:
    """Say ``spoken`` and wait for the agent's whole reply to that turn."""
    await caller.send_pcm(speak(spoken))
    await caller.wait_for(caller.turn_done(turn), timeout=15)
    await caller.silence(300)


async def record_of(api: TenantApi, tenant: str) -> pb.Call:
    for _ in range(50):
        listed = await api.stub.ListCalls(
            svc.ListCallsRequest(parent=f"tenants/{tenant}"), metadata=api.md(tenant, "viewer")
        )
        if listed.calls and listed.calls[0].status == pb.CALL_STATUS_COMPLETED:
            return await api.stub.GetCall(
                svc.GetCallRequest(name=listed.calls[0].name), metadata=api.md(tenant, "viewer")
            )
        await asyncio.sleep(0.1)
    raise AssertionError("no completed call record was written")


async def two_turns(mesh: CloudMesh, tenant: str, agent_id: str) -> ConverseCaller:
    async with (
        grpc.aio.insecure_channel(mesh.address) as ch,
        ConverseCaller(ch, call_config(agent_id), metadata=caller_md(tenant)) as caller,
    ):
        await caller.wait_for(lambda c: said(c, 0), timeout=10)  # the greeting
        await caller.silence(500)
        await talk(caller, 1, FIRST)
        await talk(caller, 2, SECOND)
        ended = await caller.hangup()
    assert ended.reason == gateway_pb2.END_REASON_CALLER_HANGUP
    return caller


def assert_heard_and_answered(mesh: CloudMesh, caller: ConverseCaller) -> list[str]:
    """Each turn's words reached OpenAI once, and its echo came back as the agent's speech, in
    the audio the caller heard. Returns the replies."""
    replies = []
    for turn, spoken in ((1, FIRST), (2, SECOND)):
        (final,) = finals(caller, turn)
        assert words(final) == spoken
        reply = said(caller, turn)
        assert words(reply) == ["echo", *spoken], reply
        replies.append(reply)
    chats = [r for r in mesh.openai.requests if r.path.endswith("/chat/completions")]
    users = [[m["content"] for m in r.body["messages"] if m["role"] == "user"] for r in chats]
    assert [words(u[-1]) for u in users] == [FIRST, SECOND]
    assert all(r.model == "gpt-4o-mini" and r.body["stream"] for r in chats)
    # Pieces are spoken trimmed (tts_svc cuts the reply at clauses): compare without spaces.
    heard = heard_text(b"".join(r.msg.audio for r in caller.of("audio")), 16000).replace(" ", "")
    for reply in replies:
        assert reply.replace(" ", "") in heard
    return replies


async def test_tenant_agents_run_on_cloud_providers_with_their_own_or_the_default_keys(
    api: TenantApi, redis_url: str
) -> None:
    own, shared = await api.new_tenant(), await api.new_tenant()
    await cloud_agent(api, own, "aura", "deepgram", AURA_VOICE, "aura-2")
    await cloud_agent(api, shared, "eleven", "elevenlabs", ELEVEN_VOICE, "eleven_turbo_v2_5")
    suffix = tenant_env_suffix(own)
    environ = {
        **DEFAULTS,
        f"DEEPGRAM_API_KEY__{suffix}": "dg-own",
        f"OPENAI_API_KEY__{suffix}": "sk-own",
    }
    async with (
        cloud_doubles() as doubles,
        cloud_mesh(environ, tenant_address=api.address, redis_url=redis_url, doubles=doubles) as mesh,
    ):
        # Tenant "own": Nova-3, OpenAI, Aura-2, all with the tenant's own keys.
        caller = await two_turns(mesh, own, "aura")
        replies = assert_heard_and_answered(mesh, caller)
        (listen,) = mesh.listen.requests
        assert listen.authorization == "Token dg-own"
        assert (listen.param("model"), listen.param("language"), listen.query["keyterm"]) == (
            "nova-3",
            "en-US",
            ["Alpha"],
        )
        assert {r.authorization for r in mesh.openai.requests} == {"Bearer sk-own"}
        assert {c.key for c in mesh.speak.connections} == {"dg-own"}
        assert {c.model for c in mesh.speak.connections} == {AURA_VOICE}
        spoken_by_aura = "".join(mesh.speak.texts).replace(" ", "")
        for reply in ["Hello from the cloud.", *replies]:
            assert reply.replace(" ", "") in spoken_by_aura
        assert mesh.local_stt.opened == 0 and mesh.local_tts.texts == []
        record = await record_of(api, own)
        turns = {t.index: t for t in record.turns}
        assert [words(turns[i].caller_text) for i in (1, 2)] == [FIRST, SECOND]
        assert [turns[i].agent_text for i in (1, 2)] == replies

        # Tenant "shared": the same services, ElevenLabs, and the deployment's default keys.
        mesh.openai.requests.clear()
        aura_sockets = len(mesh.speak.connections)
        caller = await two_turns(mesh, shared, "eleven")
        replies = assert_heard_and_answered(mesh, caller)
        assert mesh.listen.requests[-1].authorization == "Token dg-default"
        assert {r.authorization for r in mesh.openai.requests} == {"Bearer sk-default"}
        assert {(r.key, r.voice_id, r.model) for r in mesh.elevenlabs.requests} == {
            ("el-default", ELEVEN_VOICE, "eleven_turbo_v2_5")
        }
        spoken_by_eleven = "".join(mesh.elevenlabs.texts).replace(" ", "")
        for reply in replies:
            assert reply.replace(" ", "") in spoken_by_eleven
        assert len(mesh.speak.connections) == aura_sockets  # Aura-2 was not asked
        record = await record_of(api, shared)
        assert [t.agent_text for t in sorted(record.turns, key=lambda t: t.index) if t.index] == replies

    # Stopping tts_svc closed the Aura-2 sockets it kept idle between streams (Close, not a drop).
    await until(lambda: doubles.speak.open == 0)
    assert all(c.closed_by_client for c in doubles.speak.connections), [
        (c.messages, c.closed_by_client) for c in doubles.speak.connections
    ]


async def test_providers_failing_mid_call_fall_back_to_local_and_the_call_goes_on(
    api: TenantApi, redis_url: str
) -> None:
    tenant = await api.new_tenant()
    await cloud_agent(api, tenant, "aura", "deepgram", AURA_VOICE, "aura-2")
    # Every TTS stream opens its own speak socket (no idle reuse), so an injected fault lands on
    # the stream it is meant for; a short first-audio deadline keeps the turn inside the
    # gateway's no-response budget (no filler).
    tts = {"tts_deepgram_max_idle": 0, "tts_provider_first_audio_timeout_s": 0.5}
    async with cloud_mesh(dict(DEFAULTS), tenant_address=api.address, redis_url=redis_url, tts=tts) as mesh:
        # The listen socket drops after the first word of the first utterance: no final covered it.
        mesh.listen.faults.append(ListenFault(disconnect_after_words=1))
        before = {
            s: fallbacks(s, p, "local")
            for s, p in (("stt", "deepgram"), ("llm", "openai"), ("tts", "deepgram"))
        }
        async with (
            grpc.aio.insecure_channel(mesh.address) as ch,
            ConverseCaller(ch, call_config("aura"), metadata=caller_md(tenant)) as caller,
        ):
            await caller.wait_for(lambda c: said(c, 0), timeout=10)
            # The call's phrases (greeting, filler, apology) are on Aura-2 and their sockets closed.
            await caller.wait_for(lambda c: len(mesh.speak.connections) >= 3 and mesh.speak.open == 0)
            # Turn 1: OpenAI answers every attempt with 429, and Aura-2's next socket never speaks.
            mesh.openai.always = OpenAIFault(status=429, retry_after="0.05")
            mesh.speak.faults.append(SpeakFault(first_audio_delay_s=30))
            await talk(caller, 1, FIRST)
            # Turn 2: OpenAI is back; Aura-2 behaves again.
            mesh.openai.always = None
            await talk(caller, 2, SECOND)
            ended = await caller.hangup()
        assert ended.reason == gateway_pb2.END_REASON_CALLER_HANGUP

        # STT: Deepgram delivered one word, then dropped; the local stand-in heard the replayed
        # audio, and the caller's words arrived once, in order, for both turns.
        assert [r.status for r in mesh.listen.requests] == [101] and mesh.local_stt.opened == 1
        assert [words(f) for f in finals(caller, 1) + finals(caller, 2)] == [FIRST, SECOND]
        assert fallbacks("stt", "deepgram", "local") == before["stt"] + 1

        # LLM: the storm used up OpenAI's attempts, the offline responder answered turn 1 (it
        # repeats the caller's words), and OpenAI answered turn 2.
        storm = [words(r.body["messages"][-1]["content"]) for r in mesh.openai.requests]
        assert storm == [FIRST] * 3 + [SECOND], storm
        first, second = said(caller, 1), said(caller, 2)
        assert "offline" in first and words(first)[-3:] == FIRST, first
        assert words(second) == ["echo", *SECOND]
        assert fallbacks("llm", "openai", "local") == before["llm"] + 1

        # TTS: Aura-2 got turn 1's text but never spoke; the local engine spoke it; turn 2 was
        # Aura-2's again. The caller heard both replies, each once.
        assert fallbacks("tts", "deepgram", "local") == before["tts"] + 1
        silent = mesh.speak.connections[3]  # after the call's three phrases
        assert silent.texts and silent.texts[0].strip() in first and silent.audio_bytes == 0
        local_said = "".join(mesh.local_tts.texts).replace(" ", "")
        assert local_said == first.replace(" ", ""), mesh.local_tts.texts
        assert second.replace(" ", "") in "".join(mesh.speak.texts).replace(" ", "")
        heard = heard_text(b"".join(r.msg.audio for r in caller.of("audio")), 16000).replace(" ", "")
        for reply in (first, second):
            assert heard.count(reply.replace(" ", "")) == 1, heard

        record = await record_of(api, tenant)
        turns = {t.index: t for t in record.turns}
        assert [words(turns[i].caller_text) for i in (1, 2)] == [FIRST, SECOND]
        assert [turns[i].agent_text for i in (1, 2)] == [first, second]


async def test_stt_falls_back_to_the_sdks_models_without_its_private_websocket(
    api: TenantApi, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """stt_svc reads Deepgram's raw JSON from the SDK socket's private ``_websocket`` (see
    docs/architecture.md "Cloud providers"); an SDK without it must still give the same call."""
    asked: list[str] = []

    def without_private_websocket(obj: object, name: str, *default: object) -> object:
        if name == "_websocket":
            asked.append(name)
            return None
        return getattr(obj, name, *default)

    # Module globals shadow builtins: only deepgram_stream's lookups see an SDK without it.
    monkeypatch.setattr(deepgram_stream, "getattr", without_private_websocket, raising=False)
    tenant = await api.new_tenant()
    await cloud_agent(api, tenant, "aura", "deepgram", AURA_VOICE, "aura-2")
    async with cloud_mesh(dict(DEFAULTS), tenant_address=api.address, redis_url=redis_url) as mesh:
        async with (
            grpc.aio.insecure_channel(mesh.address) as ch,
            ConverseCaller(ch, call_config("aura"), metadata=caller_md(tenant)) as caller,
        ):
            await caller.wait_for(lambda c: said(c, 0), timeout=10)
            await talk(caller, 1, FIRST)
            await caller.hangup()
        assert asked and mesh.local_stt.opened == 0
        assert [words(f) for f in finals(caller, 1)] == [FIRST]
        assert words(said(caller, 1)) == ["echo", *FIRST]
