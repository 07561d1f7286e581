"""The portal's "test this agent" through the real front, gateway (scripted STT/LLM/TTS doubles
behind it), tenant_svc and PostgreSQL: text in, the agent's audio, transcript and latencies out,
and the call recorded like any other; refusals keep the gateway's status."""

from __future__ import annotations

import base64
import io
import wave
from collections.abc import AsyncIterator

import pytest

from tenant_svc.db.database import DatabaseSettings
from tests.credentials import KEY_DIR
from tests.doubles.mesh_services import ScriptedStt
from tests.integration.gateway_harness import scripted_mesh
from tests.integration.rest_harness import client, rest_front
from tests.integration.tenant_harness import TenantApi, tenant_api
from tests.integration.test_gateway_tenancy import wait_for_record


@pytest.fixture(scope="module")
async def api(database_settings: DatabaseSettings, redis_url: str) -> AsyncIterator[TenantApi]:
    async with tenant_api(database_settings, KEY_DIR, redis_url) as running:
        yield running


@pytest.mark.slow  # the caller's words are spoken by the local Piper voice, in real time
async def test_a_test_call_returns_audio_transcript_and_is_recorded(api: TenantApi, redis_url: str) -> None:
    t = await api.new_tenant()
    await api.new_agent(t, "reception", "Be brief.")
    stt = ScriptedStt(["what are your hours?"])
    async with (
        scripted_mesh(stt, tenant_address=api.address, redis_url=redis_url) as mesh,
        rest_front(api.address, gateway_address=mesh.address) as url,
        client(url, api.token(t, "agent")) as h,
    ):
        r = await h.post(
            "/portal/api/test-call",
            json={"agent": "reception", "text": "What are your hours?"},
            headers={"x-tenant-id": t},
            timeout=60,
        )
        assert r.status_code == 200, r.text
        got = r.json()
        async with client(url, api.token(t, "viewer")) as viewer:
            refused = await viewer.post(
                "/portal/api/test-call", json={"agent": "reception", "text": "hi"}, headers={"x-tenant-id": t}
            )
    assert got["error"] == "" and got["callId"]
    said = [(e["speaker"], e["text"]) for e in got["transcript"]]
    assert ("caller", "what are your hours?") in said
    assert any(speaker == "agent" and text.startswith("You said") for speaker, text in said)
    assert got["turns"] and got["turns"][0]["first_audio_out_ms"] is not None
    with wave.open(io.BytesIO(base64.b64decode(got["audioWav"]))) as w:
        assert w.getframerate() == 16000 and w.getnframes() > 1600  # more than 0.1 s of the agent
    record = await wait_for_record(api, t)
    assert record.name.endswith("/" + got["callId"])
    assert refused.status_code == 403 and refused.json()["code"] == 7  # the gateway's RBAC


async def test_test_calls_refuse_bad_input_and_say_when_they_are_off(api: TenantApi) -> None:
    t = await api.new_tenant()
    async with rest_front(api.address) as off, client(off, api.token(t, "agent")) as h:
        r = await h.post(
            "/portal/api/test-call", json={"agent": "a", "text": "hi"}, headers={"x-tenant-id": t}
        )
        assert r.status_code == 400 and "VOICEAI_REST_GATEWAY_ADDRESS" in r.json()["message"]
    async with (
        rest_front(api.address, gateway_address="127.0.0.1:9") as on,
        client(on, api.token(t, "agent")) as h,
    ):
        cases = [
            ({"agent": "Bad Id", "text": "hi"}, "agent must be"),
            ({"agent": "a", "text": ""}, "text must be"),
            ({"agent": "a", "text": "x" * 501}, "text must be"),
            ({"agent": "a", "text": "hi", "extra": 1}, "send {"),
        ]
        for body, words in cases:
            r = await h.post("/portal/api/test-call", json=body, headers={"x-tenant-id": t})
            assert r.status_code == 400 and words in r.json()["message"], r.text
        missing = await h.post("/portal/api/test-call", json={"agent": "a", "text": "hi"})
        assert missing.status_code == 400 and "X-Tenant-Id" in missing.json()["message"]
