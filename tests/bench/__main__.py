"""`make bench`: every benchmark section in order. Numbers are printed, never asserted.

Sections: services (per-service overhead with zero-cost engines; local engine speed), then
gateway (N concurrent calls through the whole mesh), then state (config cache and quotas on
an embedded Redis), then tenancy (tenant_svc Get/List over gRPC + PostgreSQL with RLS and auth), then discovery
(Consul: time for a critical instance to stop getting streams; balancing spread).
"""

from __future__ import annotations

import sys

from tests.bench import discovery, gateway, services, state, tenancy


def main() -> None:
    services.main()
    gateway.main(sys.argv[1:])
    state.main([])
    tenancy.main([])
    discovery.main([])


if __name__ == "__main__":
    main()
