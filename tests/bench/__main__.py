"""`make bench`: every benchmark section in order. Numbers are printed, never asserted.

Sections: services (per-service overhead with zero-cost engines; local engine speed), then
gateway (N concurrent calls through the whole mesh).
"""

from __future__ import annotations

import sys

from tests.bench import gateway, services


def main() -> None:
    services.main()
    gateway.main(sys.argv[1:])


if __name__ == "__main__":
    main()
