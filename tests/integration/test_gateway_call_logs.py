"""Log lines name the call they are about, also when calls overlap.

The per-process pacer runs every call's playout callbacks (segment start, reply done, and the
per-turn timing line); they must run as the call they belong to, not as whichever call
happened to start the pacer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator

import grpc.aio

from common import context
from tests.caller import ConverseCaller
from tests.doubles.mesh_services import ScriptedStt, tone
from tests.integration.gateway_harness import inline_config, scripted_mesh


class IdsAtEmit(logging.Handler):
    """Keeps (message, call id bound where the line was logged): what common.logs prints."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[tuple[str, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append((record.getMessage(), context.call_id()))


@contextlib.contextmanager
def gateway_log() -> Iterator[IdsAtEmit]:
    handler = IdsAtEmit()
    logger = logging.getLogger("gateway")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


async def _two_turns(caller: ConverseCaller, after: ConverseCaller | None = None) -> str:
    """Two turns; with ``after``, only once that call's agent is speaking."""
    if after is not None:
        await caller.wait_for(lambda _c: after.of("agent_speech"))
    for turn in (1, 2):
        await caller.send_pcm(tone(600))
        await caller.wait_for(caller.turn_done(turn), timeout=10)
    await caller.hangup()
    return caller.of("call_started")[0].msg.call_started.call_id


async def test_each_calls_turn_lines_carry_its_own_call_id() -> None:
    stt = ScriptedStt(["hello there."] * 4)
    with gateway_log() as log:
        async with scripted_mesh(stt) as mesh, grpc.aio.insecure_channel(mesh.address) as ch:
            async with (
                ConverseCaller(ch, inline_config()) as first,
                ConverseCaller(ch, inline_config()) as second,
            ):
                # The first call's reply starts the process-wide pacer from inside that call;
                # the second caller speaks only then, so both calls' playouts share it.
                first_id, second_id = await asyncio.gather(_two_turns(first), _two_turns(second, first))
    assert first_id and second_id and first_id != second_id
    turn_lines = [(msg, call) for msg, call in log.lines if msg.startswith("turn ")]
    assert sorted(turn_lines) == sorted(
        [(msg, call) for msg, call in turn_lines if call in (first_id, second_id)]
    ), f"turn lines under no call or another call: {turn_lines}"
    for call in (first_id, second_id):
        turns = sorted(msg.split(":")[0] for msg, c in turn_lines if c == call)
        assert turns == ["turn 1", "turn 2"], (call, turn_lines)
    ended = {call for msg, call in log.lines if msg.startswith("call ended")}
    assert ended == {first_id, second_id}
