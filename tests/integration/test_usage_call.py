"""Issue 17 end to end: a tenant's call on the cloud doubles, with a mid-call TTS fallback from
Aura-2 to ElevenLabs, is recorded with each provider's usage and priced per provider; the
tenant's usage equals its priced record."""

from __future__ import annotations

import grpc.aio
from google.protobuf import field_mask_pb2

from common.gen.voiceai.gateway.v1 import gateway_pb2
from common.gen.voiceai.tenant.v1 import tenant_service_pb2 as svc
from common.gen.voiceai.tenant.v1 import usage_service_pb2 as us
from common.gen.voiceai.tenant.v1 import usage_service_pb2_grpc as us_grpc
from common.pricing import DEFAULT_BOOK
from tests.caller import ConverseCaller
from tests.doubles.deepgram_speak import Fault as SpeakFault
from tests.integration.cloud_harness import cloud_mesh
from tests.integration.tenant_harness import TenantApi
from tests.integration.test_cloud_call import (
    AURA_VOICE,
    DEFAULTS,
    FIRST,
    SECOND,
    api,
    call_config,
    caller_md,
    cloud_agent,
    record_of,
    said,
    talk,
)

__all__ = ["api"]  # the module-scoped tenant_svc fixture, shared


async def test_a_mid_call_tts_fallback_is_recorded_and_priced_per_provider(
    api: TenantApi, redis_url: str
) -> None:
    tenant = await api.new_tenant()
    agent = await cloud_agent(api, tenant, "aura", "deepgram", AURA_VOICE, "aura-2")
    agent.tts_providers[:] = ["deepgram", "elevenlabs", "local"]
    await api.stub.UpdateAgent(
        svc.UpdateAgentRequest(agent=agent, update_mask=field_mask_pb2.FieldMask(paths=["tts_providers"])),
        metadata=api.md(tenant, "admin"),
    )
    tts = {"tts_deepgram_max_idle": 0, "tts_provider_first_audio_timeout_s": 0.5}
    async with cloud_mesh(dict(DEFAULTS), tenant_address=api.address, redis_url=redis_url, tts=tts) as mesh:
        async with (
            grpc.aio.insecure_channel(mesh.address) as ch,
            ConverseCaller(ch, call_config("aura"), metadata=caller_md(tenant)) as caller,
        ):
            await caller.wait_for(lambda c: said(c, 0), timeout=10)
            await caller.wait_for(lambda c: len(mesh.speak.connections) >= 3 and mesh.speak.open == 0)
            mesh.speak.faults.append(SpeakFault(first_audio_delay_s=30))  # turn 1: Aura-2 goes silent
            await talk(caller, 1, FIRST)
            await talk(caller, 2, SECOND)
            ended = await caller.hangup()
        assert ended.reason == gateway_pb2.END_REASON_CALLER_HANGUP
        first, second = said(caller, 1), said(caller, 2)
        # What each provider was sent and spoke (ElevenLabs: one request per piece).
        eleven_texts = [r.body["text"] for r in mesh.elevenlabs.requests if r.completed]
        aura_turn2 = mesh.speak.connections[-1].texts
    assert "".join(eleven_texts).replace(" ", "") == first.replace(" ", "")  # ElevenLabs spoke turn 1
    assert "".join(aura_turn2).replace(" ", "") == second.replace(" ", "")  # Aura-2 spoke turn 2
    eleven_chars = sum(len(t) for t in eleven_texts)
    record = await record_of(api, tenant)
    tts_lines = {(ln.turn, ln.provider, ln.unit): ln for ln in record.usage.lines if ln.component == "tts"}
    # Turn 1 was spoken by ElevenLabs, turn 2 by Aura-2: each billed for the characters it spoke.
    eleven = tts_lines[1, "elevenlabs", "character"]
    aura = tts_lines[2, "deepgram", "character"]
    assert eleven.quantity_milli == eleven_chars * 1000 > 0
    assert (
        aura.model == "aura-2" and aura.quantity_milli == sum(len(t.strip()) for t in aura_turn2) * 1000 > 0
    )
    assert (1, "deepgram", "character") not in tts_lines  # Aura-2 never spoke turn 1
    assert eleven.cost_micros == round(eleven.quantity_milli / 1000 * 0.10 * 1000)  # $0.10 / 1k chars
    assert aura.cost_micros == round(aura.quantity_milli / 1000 * 0.030 * 1000)  # $0.030 / 1k chars
    assert tts_lines[1, "elevenlabs", "second"].quantity_milli > 0
    llm = [ln for ln in record.usage.lines if ln.component == "llm"]
    assert {(ln.turn, ln.provider, ln.model, ln.key_label) for ln in llm} >= {
        (1, "openai", "gpt-4o-mini", "default"),
        (2, "openai", "gpt-4o-mini", "default"),
    }
    assert all(ln.cost_micros > 0 and not ln.unpriced for ln in llm)
    # STT: what Deepgram was sent (voiced audio only, behind stt_svc's gate), reported per utterance.
    stt = [ln for ln in record.usage.lines if ln.component == "stt"]
    assert {(ln.provider, ln.model) for ln in stt} == {("deepgram", "nova-3")}
    assert 0 < sum(ln.quantity_milli for ln in stt) < record.usage.stt_seconds * 1000
    assert record.usage.price_book_version == DEFAULT_BOOK.version and not record.usage.unpriced
    assert record.usage.cost_micros == sum(ln.cost_micros for ln in record.usage.lines)
    # The tenant's usage, by provider, is the record's.
    usage = await us_grpc.UsageServiceStub(api.channel).GetUsage(
        us.GetUsageRequest(parent=f"tenants/{tenant}", group_by=[us.USAGE_GROUP_BY_PROVIDER]),
        metadata=api.md(tenant, "admin"),
    )
    assert usage.calls == 1 and usage.cost_micros == record.usage.cost_micros
    by_provider = {(r.component, r.provider): r.cost_micros for r in usage.rows}
    assert by_provider["tts", "elevenlabs"] == sum(
        ln.cost_micros for ln in record.usage.lines if ln.provider == "elevenlabs"
    )
