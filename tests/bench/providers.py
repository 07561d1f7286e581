"""The "providers" bench section: each cloud-provider adapter against its protocol double.

Per service: adapter overhead (first output latency minus the double's configured latency,
p50/p99 over hundreds of runs, beside the bare SDK's floor where the module measures it) and
fallback switch time (from the failed attempt's failure or deadline to the next provider's
first output). Targets (issue 5): overhead <= 2 ms p99; fallback <= 50 ms beyond the deadline.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from common.server import run
from common.settings import ServiceSettings

T = TypeVar("T")


def in_service_runtime(main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run ``main`` as a service process runs (``common.server.run``: uvloop, the GIL switch
    interval, start-up objects frozen out of the collector), since the adapters measured here
    live in the service process in production; returns its result."""
    result: list[T] = []

    async def body() -> None:
        result.append(await main())

    run(body, ServiceSettings())
    return result[0]


def main(argv: list[str] | None = None) -> None:
    for service in ("stt", "llm", "tts"):
        print(f"\n== providers: {service}", flush=True)
        module = importlib.import_module(f"tests.bench.providers_{service}")
        module.main(list(argv or []))


if __name__ == "__main__":
    main()
