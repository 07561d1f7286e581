"""`make bench`: every benchmark section in order. Numbers are printed, never asserted.

Sections: services (per-service overhead with zero-cost engines; local engine speed), then
echo (the transport floor: a bare grpc.aio echo at the caller edge's message rate), then
gateway (N concurrent calls through the whole mesh), then state (config cache and quotas on
an embedded Redis), then tenancy (tenant_svc Get/List over gRPC + PostgreSQL with RLS and auth),
then discovery (Consul: time for a critical instance to stop getting streams; balancing spread), then failover
(extra latency of a turn whose STT/LLM instance died, words lost), then providers (each cloud
provider adapter against its protocol double: adapter overhead, fallback switch time).
``--only SECTION`` runs one section; every other option goes to the gateway section (see
``python -m tests.bench.gateway --help``).
"""

from __future__ import annotations

import argparse
import sys

from tests.bench import (
    discovery,
    echo,
    failover,
    gateway,
    providers,
    records,  # issue 15
    services,
    state,
    tenancy,
)

SECTIONS = (
    "services",
    "echo",
    "gateway",
    "state",
    "tenancy",
    "discovery",
    "failover",
    "providers",
    "records",
)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.bench", description=__doc__, add_help=False)
    parser.add_argument("--only", choices=SECTIONS)
    parser.add_argument("-h", "--help", action="store_true")
    args, rest = parser.parse_known_args(sys.argv[1:])
    if args.help:
        parser.print_help()
        print()
        gateway.main(["--help"])

    def wanted(section: str) -> bool:
        return args.only in (None, section)

    if wanted("services"):
        services.main()
    if wanted("echo"):
        echo.main(["--streams", "10,50,100,200"])
    if wanted("gateway"):
        gateway.main(rest)
    if wanted("state"):
        state.main([])
    if wanted("tenancy"):
        tenancy.main([])
    if wanted("discovery"):
        discovery.main([])
    if wanted("failover"):
        failover.main([])
    if wanted("providers"):
        providers.main([])
    if wanted("records"):  # issue 15: record write cost on call end, outbox drain rate
        records.main([])


if __name__ == "__main__":
    main()
