"""Supervision for the local mesh launcher (``make run``): a child that dies is restarted with
backoff and the restart is logged, so a developer can kill one service and watch the mesh
recover as production would (Kubernetes restarts a crashed container the same way).

Backoff per service: 1 s, doubling to 30 s while it keeps dying; once it has stayed up for 30 s
the next death starts from 1 s again.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.mesh import Mesh, Service

INITIAL_BACKOFF_S = 1.0
MAX_BACKOFF_S = 30.0
STABLE_AFTER_S = 30.0


@dataclass(slots=True)
class _Restarts:
    count: int = 0
    backoff_s: float = INITIAL_BACKOFF_S
    due: float | None = None  # when the pending restart runs
    started: float = 0.0


class Supervisor:
    """Restarts the mesh's dead children (call ``check`` periodically from the launcher loop)."""

    def __init__(
        self,
        mesh: Mesh,
        *,
        clock: Callable[[], float] = time.monotonic,
        log: Callable[[str], None] | None = None,
    ) -> None:
        from gateway.mesh import say

        self._mesh = mesh
        self._clock = clock
        self._say = log or say
        now = clock()
        self._state = {s.name: _Restarts(started=now) for s in mesh.services}

    def check(self) -> list[str]:
        """Schedules a restart for each newly dead child and runs those that are due; returns
        the names restarted now."""
        now = self._clock()
        restarted: list[str] = []
        for s in self._mesh.services:
            state = self._state[s.name]
            if s.alive():
                if now - state.started >= STABLE_AFTER_S:
                    state.backoff_s = INITIAL_BACKOFF_S
                continue
            if state.due is None:
                self._died(s, state, now)
            elif now >= state.due:
                state.due = None
                state.count += 1
                state.started = now
                self._say(f"  supervisor: restarting {s.package} (restart {state.count})")
                self._mesh.respawn(s)
                restarted.append(s.name)
        return restarted

    def _died(self, s: Service, state: _Restarts, now: float) -> None:
        if now - state.started >= STABLE_AFTER_S:
            state.backoff_s = INITIAL_BACKOFF_S
        state.due = now + state.backoff_s
        rc = s.popen.returncode if s.popen is not None else None
        self._say(
            f"  supervisor: {s.package} exited (code {rc}); restarting in {state.backoff_s:.0f} s."
            f" Its last lines:\n{s.last_lines()}"
        )
        state.backoff_s = min(MAX_BACKOFF_S, state.backoff_s * 2)

    def restarts(self, name: str) -> int:
        """How many times the child ``name`` was restarted."""
        return self._state[name].count


__all__ = ["INITIAL_BACKOFF_S", "MAX_BACKOFF_S", "STABLE_AFTER_S", "Supervisor"]
