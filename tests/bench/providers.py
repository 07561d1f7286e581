"""The "providers" bench section: each cloud-provider adapter against its protocol double.

Per service: adapter overhead (first output latency minus the double's configured latency,
p50/p99 over hundreds of runs, beside the bare SDK's floor where the module measures it) and
fallback switch time (from the failed attempt's failure or deadline to the next provider's
first output). Targets (issue 5): overhead <= 2 ms p99; fallback <= 50 ms beyond the deadline.
"""

from __future__ import annotations

import importlib


def main(argv: list[str] | None = None) -> None:
    for service in ("stt", "llm", "tts"):
        print(f"\n== providers: {service}", flush=True)
        module = importlib.import_module(f"tests.bench.providers_{service}")
        module.main(list(argv or []))


if __name__ == "__main__":
    main()
