"""Overload sheds, it does not smear: a gateway admits at most ``max_calls`` concurrent calls.

Beyond that a new call gets RESOURCE_EXHAUSTED with a retry hint at once (before any work), and
the gateway's readiness reports NOT_SERVING while it is full, so load balancers and Consul send
new calls to another instance; the calls already admitted keep their latency. The slot is freed
when the call's RPC ends, whichever way it ends.
"""

from __future__ import annotations

import grpc.aio
from prometheus_client import Counter

from common.errors import ResourceExhausted
from common.readiness import CheckDependency, Dependency

SHED = Counter("voiceai_gateway_calls_shed_total", "Calls refused because the gateway was at max_calls")
RETRY_AFTER_S = 2.0


class CallCapacity:
    """Concurrent-call slots of one gateway process (``max_calls`` 0 = unlimited)."""

    def __init__(self, max_calls: int = 0) -> None:
        self.max_calls = max_calls
        self.active = 0

    def admit(self, rpc: grpc.aio.ServicerContext) -> None:
        """Takes a slot until ``rpc`` ends, or raises RESOURCE_EXHAUSTED with a retry hint."""
        if self.max_calls and self.active >= self.max_calls:
            SHED.inc()
            raise ResourceExhausted(
                f"this gateway is at its limit of {self.max_calls} concurrent calls; retry in"
                f" {RETRY_AFTER_S:.0f} s (another instance may have room)",
                retry_after_s=RETRY_AFTER_S,
                quota_subject="gateway_concurrent_calls",
            )
        self.active += 1
        rpc.add_done_callback(self._release)

    def _release(self, _rpc: object) -> None:
        self.active -= 1

    async def _has_room(self) -> None:
        if self.max_calls and self.active >= self.max_calls:
            raise RuntimeError(f"at max_calls ({self.active} of {self.max_calls} calls)")

    def dependencies(self) -> list[Dependency]:
        """Readiness: not ready for new calls while full (only when a limit is set)."""
        return [CheckDependency("call_capacity", self._has_room)] if self.max_calls else []


__all__ = ["CallCapacity"]
