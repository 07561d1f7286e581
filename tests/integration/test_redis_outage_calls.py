"""Redis killed during live calls (a real redis-server): the calls finish with their history
intact (the in-process copy, written back when Redis returns), the leases they hold stay valid,
and a new call is refused naming the real cause while Redis is down (fail-closed admission)."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import grpc
import grpc.aio

from common.gen.voiceai.gateway.v1 import gateway_pb2
from common.gen.voiceai.llm.v1 import llm_pb2
from common.redis_embedded import EmbeddedRedis
from tests.caller import ConverseCaller
from tests.doubles.mesh_services import ScriptedLlm, ScriptedStt, tone
from tests.integration.gateway_harness import inline_config, scripted_mesh

CALLS = 2  # the default plan (free) admits 2 concurrent calls per tenant


def user_texts(request: llm_pb2.StreamChatRequest) -> list[str]:
    return [m.content for m in request.messages if m.role == llm_pb2.ROLE_USER]


async def test_live_calls_survive_a_redis_outage_with_their_history(tmp_path: Path) -> None:
    redis = EmbeddedRedis(tmp_path / "redis")
    url = redis.start(reuse=False)
    llm = ScriptedLlm()
    stt = ScriptedStt(["first words.", "second words.", "third words."] * CALLS)
    try:
        async with (
            scripted_mesh(stt, llm, redis_url=url) as mesh,
            grpc.aio.insecure_channel(mesh.address) as ch,
        ):
            async with contextlib.AsyncExitStack() as stack:
                callers = [
                    await stack.enter_async_context(ConverseCaller(ch, inline_config())) for _ in range(CALLS)
                ]

                async def turn(n: int) -> None:
                    for c in callers:  # one at a time: the scripted STT answers in order
                        await c.send_pcm(tone(600))
                        await c.wait_for(c.turn_done(n), timeout=15)

                await turn(1)
                redis.stop()  # killed with the calls live
                await turn(2)
                # While Redis is down a new call is refused, saying why.
                async with ConverseCaller(ch, inline_config()) as refused:
                    await refused.wait_for(lambda c: c.error, keep_talking=False)
                assert refused.error is not None and refused.error.code() == grpc.StatusCode.UNAVAILABLE
                assert "Redis" in (refused.error.details() or "")
                redis.start(reuse=False)
                await asyncio.sleep(1.2)  # the history store tries Redis again after 1 s
                await turn(3)
                ended = [await c.hangup() for c in callers]
    finally:
        redis.stop()
    assert all(e.reason == gateway_pb2.END_REASON_CALLER_HANGUP and e.turns == 3 for e in ended)
    # Every turn-3 request carried the call's whole history: its turns 1 and 2 (the latter
    # written while Redis was down, the former lost by Redis's restart) and 3, each once.
    seen = [user_texts(r) for r in llm.script.requests]
    third = [texts for texts in seen if len(texts) == 3]
    assert len(third) == CALLS, seen
    for texts in third:
        assert texts[:2] in seen and texts[:1] in seen  # the same call's earlier requests
