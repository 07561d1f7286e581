"""Run a mesh process under cProfile: ``python -m tests.bench.profiled OUT.prof MODULE [ARGS...]``.

The stats are written when the module's ``main()`` returns (the services drain and return on
SIGTERM). cProfile slows Python code by roughly 1.5-2x and not C code, so read its output as
where the interpreter's share of the time goes, not as absolute costs.
"""

from __future__ import annotations

import cProfile
import runpy
import sys
import time


def main() -> None:
    out, module, *rest = sys.argv[1:]
    sys.argv = [module, *rest]
    profiler = cProfile.Profile(time.thread_time)  # CPU of the event-loop thread, not wall time
    try:
        profiler.runcall(runpy.run_module, module, run_name="__main__", alter_sys=True)
    finally:
        profiler.dump_stats(out)


if __name__ == "__main__":
    main()
