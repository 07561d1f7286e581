"""A finished call is freed by reference counting alone: no reference cycle keeps its session,
audio buffers and queues alive until the next full collection (which, for a call long enough
to reach the oldest generation, can be many calls later and pauses the loop when it comes)."""

from __future__ import annotations

import asyncio
import gc

import grpc.aio

from gateway.converse import ConverseTransport
from gateway.session.call import CallSession
from gateway.session.caller_input import CallerInput
from gateway.session.playout import Playout
from tests.caller import ConverseCaller
from tests.doubles.mesh_services import ScriptedStt, tone
from tests.integration.gateway_harness import inline_config, scripted_mesh

CALL_OBJECTS = (CallSession, CallerInput, Playout, ConverseTransport)


def _live_call_objects(before: frozenset[int] = frozenset()) -> list[str]:
    return [type(o).__name__ for o in gc.get_objects() if isinstance(o, CALL_OBJECTS) and id(o) not in before]


async def test_a_finished_call_leaves_no_cycles() -> None:
    stt = ScriptedStt(["hello there."])
    async with scripted_mesh(stt) as mesh, grpc.aio.insecure_channel(mesh.address) as ch:
        gc.collect()
        gc.disable()
        # Another test's call may still be finishing in this process: only this call counts.
        before = frozenset(id(o) for o in gc.get_objects() if isinstance(o, CALL_OBJECTS))
        try:
            async with ConverseCaller(ch, inline_config()) as caller:
                await caller.send_pcm(tone(600))
                await caller.wait_for(caller.turn_done(1), timeout=10)
                assert _live_call_objects(before)
                await caller.hangup()
            await asyncio.sleep(0.2)  # the handler's cleanup runs after the last response
            assert _live_call_objects(before) == []
        finally:
            gc.enable()
