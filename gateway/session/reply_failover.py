"""A turn's reply retried once on other instances when a stream fails before the caller heard it.

If the LLM or TTS stream of a turn fails (``instances.is_instance_failure``) and none of the
reply's audio has been played yet, the failed instance is marked in its pool (new streams avoid
it for a few seconds) and the same request is spoken again from the start: audio the failed
attempt had queued but not played is dropped, so nothing is said twice. Once the caller has
heard part of the reply, a failure keeps the usual outcome (the session apologises).
"""

from __future__ import annotations

import logging

from gateway import call_trace
from gateway.session.instances import FAILOVERS, failed_instance, is_instance_failure
from gateway.session.reply import ReplyTurn, speak_reply

log = logging.getLogger(__name__)


async def speak_with_failover(reply: ReplyTurn) -> None:
    """``speak_reply``, retried once on other instances (see module docstring)."""
    try:
        await speak_reply(reply)
        return
    except Exception as e:
        failed = failed_instance(e)
        if failed is None or not is_instance_failure(failed.code()) or _heard(reply):
            raise
    pool = reply.clients.llm if failed.service == "llm" else reply.clients.tts
    pool.mark_failed(failed.address)
    # Drop the failed attempt's queued segments; anything else queued (a filler) stays.
    reply.playout.drop(reply.spoken.segments)
    reply.spoken.text = ""
    reply.spoken.segments.clear()
    # The retry's own first token and first audio are what the caller waits for.
    reply.timer.timings.llm_first_token_ms = None
    reply.timer.timings.tts_first_audio_ms = None
    FAILOVERS.labels(failed.service).inc()
    call_trace.event("voiceai.instance_failover", reply.turn, service=failed.service, instance=failed.address)
    log.warning(
        "%s failover: turn %d's %s stream failed on %s before the caller heard it (%s: %s);"
        " retrying the turn on another instance",
        failed.service,
        reply.turn,
        failed.service,
        failed.address,
        failed.code().name,
        failed.details(),
        extra={"service": failed.service, "failed_instance": failed.address},
    )
    await speak_reply(reply)


def _heard(reply: ReplyTurn) -> bool:
    return any(seg.sent for seg in reply.spoken.segments)
