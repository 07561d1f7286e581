"""Overload sheds: a gateway at VOICEAI_MAX_CALLS refuses the next call at once with
RESOURCE_EXHAUSTED and a retry hint, reports NOT_SERVING while full (so new calls go elsewhere),
and the admitted calls go on; a freed slot admits again."""

from __future__ import annotations

import grpc
import grpc.aio
import pytest
from google.rpc import status_pb2

from tests.caller import ConverseCaller
from tests.doubles.mesh_services import ScriptedStt, tone
from tests.integration.gateway_harness import inline_config, scripted_mesh
from tests.integration.test_health_truth import NOT_SERVING, SERVING, health_of, wait_health


async def test_a_full_gateway_refuses_new_calls_clearly_and_keeps_the_admitted_ones(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("VOICEAI_MAX_CALLS", "2")
    stt = ScriptedStt(["one.", "two.", "three."])
    async with scripted_mesh(stt) as mesh, grpc.aio.insecure_channel(mesh.address) as ch:
        async with ConverseCaller(ch, inline_config()) as a, ConverseCaller(ch, inline_config()) as b:
            for c in (a, b):
                await c.wait_for(lambda c: c.of("call_started"))
            await wait_health(ch, "", NOT_SERVING, timeout=5)
            async with ConverseCaller(ch, inline_config()) as third:
                await third.wait_for(lambda c: c.error, keep_talking=False, timeout=5)
            assert third.error is not None and third.error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "limit of 2 concurrent calls" in (third.error.details() or "")
            raw = dict(third.error.trailing_metadata() or ()).get("grpc-status-details-bin")
            assert raw and any("RetryInfo" in d.type_url for d in status_pb2.Status.FromString(raw).details)
            for c in (a, b):  # the admitted calls go on
                await c.send_pcm(tone(600))
                await c.wait_for(c.turn_done(1), timeout=10)
            await a.hangup()
        await wait_health(ch, "", SERVING, timeout=5)
        async with ConverseCaller(ch, inline_config()) as again:
            await again.wait_for(lambda c: c.of("call_started"), timeout=5)
        assert await health_of(ch, "liveness") == SERVING


async def test_a_service_at_capacity_turns_new_calls_away_and_serves_the_admitted_ones() -> None:
    """The STT/LLM/TTS instance reports NOT_SERVING at VOICEAI_MAX_STREAMS (here 2: one STT stream
    per call); the gateway refuses the next call with RESOURCE_EXHAUSTED naming the service, while
    the admitted calls' turns (more streams) are still served."""
    stt = ScriptedStt(["one.", "two."])
    async with scripted_mesh(stt, max_streams=2) as mesh, grpc.aio.insecure_channel(mesh.address) as ch:
        (endpoint,) = await mesh.app.resolver.resolve("stt")
        async with ConverseCaller(ch, inline_config()) as a:
            await a.wait_for(lambda c: c.of("call_started"))
            async with ConverseCaller(ch, inline_config()) as b:
                await b.wait_for(lambda c: c.of("call_started"))
                async with grpc.aio.insecure_channel(endpoint.address) as services:
                    await wait_health(services, "voiceai.stt.v1.SpeechToTextService", NOT_SERVING, timeout=5)
                    async with ConverseCaller(ch, inline_config()) as c:
                        await c.wait_for(lambda c: c.error, keep_talking=False, timeout=5)
                    assert c.error is not None and c.error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                    assert "no capacity for a new call" in (c.error.details() or "")
                    for caller in (a, b):  # admitted calls: their turns open LLM/TTS streams, served
                        await caller.send_pcm(tone(600))
                        await caller.wait_for(caller.turn_done(1), timeout=10)
                    await b.hangup()
                    await wait_health(services, "voiceai.stt.v1.SpeechToTextService", SERVING, timeout=5)
            async with ConverseCaller(ch, inline_config()) as again:
                await again.wait_for(lambda c: c.of("call_started"), timeout=5)
