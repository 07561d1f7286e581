"""A turn's reply retried once on other instances when a stream fails before the caller heard it.

If the LLM or TTS stream of a turn fails (``instances.is_instance_failure``) and none of the
reply's audio has been played yet, the failed instance is marked in its pool (new streams avoid
it for a few seconds) and the same request is spoken again from the start: audio the failed
attempt had queued but not played is dropped, so nothing is said twice. Once the caller has
heard part of the reply, a failure keeps the usual outcome (the session apologises).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from common.audio import Format
from gateway import call_trace
from gateway.agents import Agent
from gateway.session.events import Usage
from gateway.session.history import HistoryEntry
from gateway.session.instances import FAILOVERS, failed_instance, is_instance_failure
from gateway.session.playout import Playout
from gateway.session.reply import SpokenText, speak_reply
from gateway.session.services import MeshClients
from gateway.session.timing import TurnTimer

log = logging.getLogger(__name__)


async def speak_with_failover(
    clients: MeshClients,
    agent: Agent,
    history: Sequence[HistoryEntry],
    fmt: Format,
    playout: Playout,
    turn: int,
    timer: TurnTimer,
    usage: Usage,
    spoken: SpokenText,
) -> None:
    """``speak_reply``, retried once on other instances (see module docstring)."""
    try:
        await speak_reply(clients, agent, history, fmt, playout, turn, timer, usage, spoken)
        return
    except Exception as e:
        failed = failed_instance(e)
        if failed is None or not is_instance_failure(failed.code()) or _heard(spoken):
            raise
    pool = clients.llm if failed.service == "llm" else clients.tts
    pool.mark_failed(failed.address)
    _discard_unplayed(playout, spoken)
    # The retry's own first token and first audio are what the caller waits for.
    timer.timings.llm_first_token_ms = None
    timer.timings.tts_first_audio_ms = None
    FAILOVERS.labels(failed.service).inc()
    call_trace.event("voiceai.instance_failover", turn, service=failed.service, instance=failed.address)
    log.warning(
        "%s failover: turn %d's %s stream failed on %s before the caller heard it (%s: %s);"
        " retrying the turn on another instance",
        failed.service,
        turn,
        failed.service,
        failed.address,
        failed.code().name,
        failed.details(),
        extra={"service": failed.service, "failed_instance": failed.address},
    )
    await speak_reply(clients, agent, history, fmt, playout, turn, timer, usage, spoken)


def _heard(spoken: SpokenText) -> bool:
    return any(seg.sent for seg in spoken.segments)


def _discard_unplayed(playout: Playout, spoken: SpokenText) -> None:
    """Drop the failed attempt's queued segments; anything else queued (a filler) stays."""
    mine = {id(seg) for seg in spoken.segments}
    paused = playout.paused
    dropped = playout.clear()
    if paused:  # a tentative barge-in holds playout: requeueing must not start it again
        playout.pause()
    for seg in dropped:
        if id(seg) not in mine:
            playout.requeue(seg)
    spoken.text = ""
    spoken.segments.clear()
