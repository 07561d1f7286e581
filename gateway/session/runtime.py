"""CallBase: what a call owns besides its logic: its tasks, its named timers and its outcome.

Every task a call starts is held here and cancelled with the call; a timer replaces any earlier
timer of the same name; once the call is closed, late callbacks start nothing. A task failing
with a ``VoiceAIError`` ends the call with that error; any other failure ends it as a service
error.
"""

from __future__ import annotations

import asyncio
import logging

from common.errors import VoiceAIError
from gateway.session.events import CallEnded, EndReason, Usage

log = logging.getLogger(__name__)


class CallBase:
    """One call's owned tasks, named timers and end (see module docstring)."""

    def __init__(self, call_id: str) -> None:
        self.call_id = call_id
        self.usage = Usage()
        self.turn = 0
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._ended: asyncio.Future[CallEnded] | None = None
        self._closed = False

    def abort(self, error: VoiceAIError) -> None:
        """End the call with an error status (e.g. the transport cannot keep up)."""
        self._fail(error)

    def end(self, reason: EndReason, message: str) -> None:
        """End the call for a reason its transport knows (a room call's caller was transferred)."""
        self._end(reason, message)

    def _end(self, reason: EndReason, message: str) -> None:
        if self._ended is not None and not self._ended.done():
            self._ended.set_result(CallEnded(reason, message, self.usage, self.turn))

    def _fail(self, error: BaseException) -> None:
        if self._ended is not None and not self._ended.done():
            self._ended.set_exception(error)

    def _spawn(self, coro, name: str) -> asyncio.Task[None] | None:  # type: ignore[no-untyped-def]
        if self._closed:  # the call is over: late callbacks start nothing
            coro.close()
            return None
        task = asyncio.get_running_loop().create_task(coro, name=f"{name}:{self.call_id[:8]}")
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        error = task.exception()
        if error is not None:
            if isinstance(error, VoiceAIError):
                self._fail(error)
            else:
                log.error("call task %s failed", task.get_name(), exc_info=error)
                self._end(EndReason.SERVICE_ERROR, f"internal error in {task.get_name().split(':')[0]}")

    def _schedule(self, key: str, delay_s: float, callback, *args) -> None:  # type: ignore[no-untyped-def]
        self._cancel_timer(key)
        self._timers[key] = asyncio.get_running_loop().call_later(max(0.0, delay_s), callback, *args)

    def _cancel_timer(self, key: str) -> None:
        handle = self._timers.pop(key, None)
        if handle is not None:
            handle.cancel()

    def _close_timers(self) -> None:
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
