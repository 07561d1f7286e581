"""Overload sheds, it does not smear: a gateway admits at most ``max_calls`` concurrent calls.

Beyond that a new call gets RESOURCE_EXHAUSTED with a retry hint at once (before any work), and
the gateway's readiness reports NOT_SERVING while it is full, so load balancers and Consul send
new calls to another instance; the calls already admitted keep their latency. The slot is freed
when the call's RPC ends, whichever way it ends.
"""

from __future__ import annotations

import grpc
import grpc.aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
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


SERVICE_NAMES = {
    "stt": "voiceai.stt.v1.SpeechToTextService",
    "llm": "voiceai.llm.v1.LanguageModelService",
    "tts": "voiceai.tts.v1.TextToSpeechService",
}


async def require_capacity(channel: grpc.aio.Channel, service: str, title: str, timeout: float = 1.0) -> None:
    """RESOURCE_EXHAUSTED with a retry hint when the instance behind ``channel`` says it is full
    (readiness NOT_SERVING: at its ``VOICEAI_MAX_STREAMS``, or a dependency down)."""
    name = SERVICE_NAMES.get(service)
    if name is None:
        return
    try:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=name), timeout=timeout
        )
    except grpc.aio.AioRpcError:
        return  # an old instance without health, or a blip: the stream's own errors decide
    if reply.status != health_pb2.HealthCheckResponse.SERVING:
        SHED.inc()
        raise ResourceExhausted(
            f"the {title} service has no capacity for a new call right now; retry in {RETRY_AFTER_S:.0f} s",
            retry_after_s=RETRY_AFTER_S,
            quota_subject=f"{service}_capacity",
        )


__all__ = ["CallCapacity", "require_capacity"]
