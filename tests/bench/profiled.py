"""Run a mesh process with measurement hooks: ``python -m tests.bench.profiled OUT MODULE [ARGS...]``.

``VOICEAI_BENCH_HOOKS`` (comma-separated) picks the hooks; results are written when the module's
``main()`` returns (the services drain and return on SIGTERM):

- ``profile``: cProfile on the event-loop thread's CPU time (``OUT.prof``). cProfile slows Python
  code by ~2x and not C code: read it as where the interpreter's share goes, not as costs.
- ``probe`` (cheap): a 5 ms timer on the event loop records how late it fires (the time a
  callback that became ready waited: stalls and queueing), and ``gc.callbacks`` record every
  collection's duration (``OUT.probe.json``, with monotonic timestamps the benchmark splits by run).
"""

from __future__ import annotations

import collections
import cProfile
import functools
import gc
import json
import os
import runpy
import sys
import time
from typing import Any

PROBE_PERIOD_S = 0.005


class Probe:
    def __init__(self) -> None:
        self.lag: list[tuple[float, float]] = []
        self.gc: list[tuple[float, int, float, float]] = []  # (when, generation, wall ms, CPU ms)
        self.heap: list[tuple[float, int]] = []  # GC-tracked objects outside the frozen start-up set
        self.heap_peak = 0
        self.heap_types: list[tuple[str, int]] = []  # at the peak, with VOICEAI_BENCH_HEAP_TYPES=1
        self._gc_start = 0.0
        self._gc_cpu = 0.0

    def on_gc(self, phase: str, info: dict[str, Any]) -> None:
        now, cpu = time.perf_counter(), time.thread_time()
        if phase == "start":
            self._gc_start, self._gc_cpu = now, cpu
        else:
            wall_ms = (now - self._gc_start) * 1000.0
            cpu_ms = (cpu - self._gc_cpu) * 1000.0
            self.gc.append((time.monotonic(), int(info["generation"]), wall_ms, cpu_ms))

    def start(self, loop: Any) -> None:
        def tick(due: float) -> None:
            now = time.monotonic()
            self.lag.append((now, (now - due) * 1000.0))
            loop.call_later(PROBE_PERIOD_S, tick, now + PROBE_PERIOD_S)

        def count_heap() -> None:
            objects = gc.get_objects()
            self.heap.append((time.monotonic(), len(objects)))
            if len(objects) > self.heap_peak and os.environ.get("VOICEAI_BENCH_HEAP_TYPES"):
                self.heap_peak = len(objects)
                self.heap_types = collections.Counter(type(o).__qualname__ for o in objects).most_common(40)
            del objects
            loop.call_later(1.0, count_heap)

        loop.call_soon(tick, time.monotonic())
        loop.call_later(1.0, count_heap)

    def dump(self, path: str) -> None:
        with open(path, "w") as f:
            json.dump({"lag": self.lag, "gc": self.gc, "heap": self.heap, "heap_types": self.heap_types}, f)


def main() -> None:
    out, module, *rest = sys.argv[1:]
    sys.argv = [module, *rest]
    hooks = set(os.environ.get("VOICEAI_BENCH_HOOKS", "profile").split(","))
    probe = Probe() if "probe" in hooks else None
    if probe is not None:
        import uvloop

        def factory() -> Any:
            loop = uvloop.new_event_loop()
            probe.start(loop)
            return loop

        uvloop.run = functools.partial(uvloop.run, loop_factory=factory)  # type: ignore[assignment]
        gc.callbacks.append(probe.on_gc)
    profiler = cProfile.Profile(time.thread_time) if "profile" in hooks else None
    try:
        if profiler is not None:
            profiler.runcall(runpy.run_module, module, run_name="__main__", alter_sys=True)
        else:
            runpy.run_module(module, run_name="__main__", alter_sys=True)
    finally:
        if profiler is not None:
            profiler.dump_stats(f"{out}.prof")
        if probe is not None:
            probe.dump(f"{out}.probe.json")


if __name__ == "__main__":
    main()
