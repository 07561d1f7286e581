"""What a call owns besides its logic: its tasks, its timers, its counters and its outcome.

``CallRuntime`` is held by ``CallSession`` (composition, not a base class). Every task a call
starts is held here and cancelled with the call; each part of the call gets its own ``Timers``
(a timer replaces any earlier one of the same name) and all are cancelled when the call
closes; once closed, late callbacks start nothing. A task failing with a ``VoiceAIError`` ends
the call with that error; any other failure ends it as a service error.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from common.errors import VoiceAIError
from gateway.session.events import CallEnded, EndReason, Usage

log = logging.getLogger(__name__)


class Timers:
    """One part of a call's named timers (each part holds its own; see module docstring)."""

    __slots__ = ("_handles",)

    def __init__(self) -> None:
        self._handles: dict[str, asyncio.TimerHandle] = {}

    def schedule(self, key: str, delay_s: float, callback: Callable[..., object], *args: object) -> None:
        """Run ``callback(*args)`` after ``delay_s`` (at once if negative), replacing ``key``."""
        self.cancel(key)
        self._handles[key] = asyncio.get_running_loop().call_later(max(0.0, delay_s), callback, *args)

    def cancel(self, key: str) -> None:
        """Cancel ``key`` if it is pending."""
        handle = self._handles.pop(key, None)
        if handle is not None:
            handle.cancel()

    def fired(self, key: str) -> None:
        """Forget ``key``: called by its callback as it runs."""
        self._handles.pop(key, None)

    def pending(self, key: str) -> bool:
        """True while ``key`` is scheduled and has not fired."""
        return key in self._handles

    def close(self) -> None:
        """Cancel every timer."""
        for handle in self._handles.values():
            handle.cancel()
        self._handles.clear()


class CallRuntime:
    """One call's owned tasks, timers, usage and turn counter, and its end (see module docstring)."""

    def __init__(self, call_id: str) -> None:
        self.call_id = call_id
        self.usage = Usage()
        self.turn = 0
        self.tasks: set[asyncio.Task[None]] = set()
        self._timers: list[Timers] = []
        self._ended: asyncio.Future[CallEnded] | None = None
        self.closed = False

    def timers(self) -> Timers:
        """A new set of timers for one part of the call, cancelled when the call closes."""
        timers = Timers()
        self._timers.append(timers)
        return timers

    def start(self) -> asyncio.Future[CallEnded]:
        """The call begins: the future that resolves with how it ended."""
        self._ended = asyncio.get_running_loop().create_future()
        return self._ended

    @property
    def live(self) -> bool:
        """The call has started and not ended or closed."""
        return not self.closed and self._ended is not None and not self._ended.done()

    def end(self, reason: EndReason, message: str) -> None:
        """End the call for ``reason`` (the first end wins)."""
        if self._ended is not None and not self._ended.done():
            self._ended.set_result(CallEnded(reason, message, self.usage, self.turn))

    def fail(self, error: BaseException) -> None:
        """End the call with an error (the first end wins)."""
        if self._ended is not None and not self._ended.done():
            self._ended.set_exception(error)

    def close(self) -> None:
        """Nothing new starts from here on; every timer is cancelled."""
        self.closed = True
        for timers in self._timers:
            timers.close()

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None] | None:
        """Start a task the call owns; once the call is closed, nothing starts (None)."""
        if self.closed:  # the call is over: late callbacks start nothing
            coro.close()
            return None
        task = asyncio.get_running_loop().create_task(coro, name=f"{name}:{self.call_id[:8]}")
        self.tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        if task.cancelled():
            return
        error = task.exception()
        if error is not None:
            if isinstance(error, VoiceAIError):
                self.fail(error)
            else:
                log.error("call task %s failed", task.get_name(), exc_info=error)
                self.end(EndReason.SERVICE_ERROR, f"internal error in {task.get_name().split(':')[0]}")
