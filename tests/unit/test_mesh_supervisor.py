"""The launcher's supervisor: a dead child is restarted after a backoff that doubles while it
keeps dying and resets once it stayed up; every restart is logged with the child's last lines."""

from __future__ import annotations

import subprocess
import sys

from gateway.mesh import Service
from gateway.mesh_supervisor import MAX_BACKOFF_S, STABLE_AFTER_S, Supervisor


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeMesh:
    """Real child processes (sleepers) standing in for the services."""

    def __init__(self) -> None:
        self.services = [Service("stt_svc", "stt", "127.0.0.1:1"), Service("llm_svc", "llm", "127.0.0.1:2")]
        for s in self.services:
            self.respawn(s)
        self.spawned: list[str] = []

    def respawn(self, s: Service) -> None:
        s.popen = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        if hasattr(self, "spawned"):
            self.spawned.append(s.name)

    def kill(self, name: str) -> None:
        s = next(s for s in self.services if s.name == name)
        assert s.popen is not None
        s.tail.append(f"{name} saying goodbye")
        s.popen.kill()
        s.popen.wait()

    def close(self) -> None:
        for s in self.services:
            if s.popen is not None and s.popen.poll() is None:
                s.popen.kill()
                s.popen.wait()


def test_a_dead_child_is_restarted_with_backoff_and_logged() -> None:
    mesh, clock, said = FakeMesh(), Clock(), []
    sup = Supervisor(mesh, clock=clock, log=said.append)  # type: ignore[arg-type]
    try:
        assert sup.check() == []
        delays = []
        for _ in range(7):
            mesh.kill("stt")
            assert sup.check() == []  # scheduled, not yet
            assert "stt_svc exited (code -9)" in said[-1] and "stt saying goodbye" in said[-1]
            start = clock.now
            while not sup.check():
                clock.now += 0.5
            delays.append(clock.now - start)
        assert delays[:5] == [1.0, 2.0, 4.0, 8.0, 16.0] and delays[-1] == MAX_BACKOFF_S
        assert sup.restarts("stt") == 7 and sup.restarts("llm") == 0
        assert mesh.spawned == ["stt"] * 7 and all(s.alive() for s in mesh.services)
        clock.now += STABLE_AFTER_S  # it stayed up: the next death starts from 1 s again
        sup.check()
        mesh.kill("stt")
        sup.check()
        clock.now += 1.0
        assert sup.check() == ["stt"]
    finally:
        mesh.close()
