"""`make bench`: every benchmark section in order. Numbers are printed, never asserted.

Sections: services (per-service overhead with zero-cost engines; local engine speed), then
echo (the transport floor: a bare grpc.aio echo at the caller edge's message rate), then
gateway (N concurrent calls through the whole mesh), then callers (the same shaped like real
callers: one connection each, ~3.8 s replies, the idle mesh; one gateway process, then one worker
per core; and the LiveKit room path's audio CPU beside it), then state (config cache and quotas on
an embedded Redis), then tenancy (tenant_svc Get/List over gRPC + PostgreSQL with RLS and auth),
then discovery (Consul: time for a critical instance to stop getting streams; balancing spread), then failover
(extra latency of a turn whose STT/LLM instance died, words lost), then providers (each cloud
provider adapter against its protocol double: adapter overhead, fallback switch time), then rest
(the REST front's overhead over direct gRPC; the portal's calls page at 10k calls).
``--only SECTION`` runs one section; every other option goes to the gateway section (see
``python -m tests.bench.gateway --help``), or with ``--only callers`` to that one.
"""

from __future__ import annotations

import argparse
import sys

from gateway.workers import default_workers
from tests.bench import (
    callers,
    discovery,
    echo,
    encryption,
    failover,
    gateway,
    livekit_audio,
    providers,
    records,  # issue 15
    services,
    state,
    tenancy,
)
from tests.bench import rest as rest_front
from tests.bench import usage as usage_bench  # issue 17: cost per call-minute, ledger, usage reads

SECTIONS = (
    "services",
    "echo",
    "gateway",
    "callers",
    "state",
    "tenancy",
    "discovery",
    "failover",
    "providers",
    "encryption",
    "rest",
    "usage",
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
    if wanted("callers"):
        # Before and after in one run: one gateway process, then one worker per usable core.
        # With --only callers, the other options go to it (python -m tests.bench.callers --help).
        counts = sorted({1, default_workers()})
        own = rest if args.only == "callers" else []
        callers.main(["--workers", ",".join(map(str, counts)), *own])
        livekit_audio.main([])
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
    if wanted("encryption"):
        encryption.main([])
    if wanted("rest"):  # REST front overhead vs gRPC; portal page load at 10k calls
        rest_front.main([])
    if wanted("usage"):
        usage_bench.main([])
    if wanted("records"):  # issue 15: record write cost on call end, outbox drain rate
        records.main([])


if __name__ == "__main__":
    main()
