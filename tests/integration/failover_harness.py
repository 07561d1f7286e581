"""A gateway wired to several instances of each service, every instance its own server on
loopback, so a test can stop one abruptly mid-call."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc.aio
from prometheus_client import REGISTRY

from common.discovery import StaticResolver
from common.gen.voiceai.llm.v1 import llm_pb2_grpc
from common.gen.voiceai.stt.v1 import stt_pb2_grpc
from common.gen.voiceai.tts.v1 import tts_pb2_grpc
from common.redis_conn import RedisSettings
from common.server import ServiceBinding, ServiceHost
from common.settings import DiscoverySettings, ServiceSettings
from gateway.agents import BuiltinAgentCatalog
from gateway.app import GatewayApp, Settings

_BINDINGS: dict[str, tuple[str, Callable[[Any, grpc.aio.Server], None]]] = {
    "stt": ("voiceai.stt.v1.SpeechToTextService", stt_pb2_grpc.add_SpeechToTextServiceServicer_to_server),
    "llm": ("voiceai.llm.v1.LanguageModelService", llm_pb2_grpc.add_LanguageModelServiceServicer_to_server),
    "tts": ("voiceai.tts.v1.TextToSpeechService", tts_pb2_grpc.add_TextToSpeechServiceServicer_to_server),
}


@dataclass
class Instance:
    servicer: Any
    host: ServiceHost
    address: str
    stopped: bool = False

    async def kill(self) -> None:
        """Stop at once: open streams are cut (as when the process dies), no grace."""
        self.stopped = True
        await self.host.drain(0)


@dataclass
class MultiMesh:
    instances: dict[str, list[Instance]]
    app: GatewayApp
    address: str

    def serving(self, service: str) -> Instance:
        """The one instance of ``service`` with a stream open (the call's)."""
        busy = [i for i in self.instances[service] if i.servicer.streams.open]
        assert len(busy) == 1, f"expected one {service} instance with an open stream, got {len(busy)}"
        return busy[0]


def failovers(service: str) -> float:
    return REGISTRY.get_sample_value("voiceai_gateway_failovers_total", {"service": service}) or 0.0


async def _start(service: str, servicer: Any) -> Instance:
    full_name, add = _BINDINGS[service]
    host = ServiceHost(ServiceSettings(), [ServiceBinding(full_name, lambda s: add(servicer, s))])
    port = await host.start()
    return Instance(servicer, host, f"127.0.0.1:{port}")


@contextlib.asynccontextmanager
async def multi_mesh(
    stt: Sequence[Any], llm: Sequence[Any], tts: Sequence[Any], *, settings: Settings | None = None
) -> AsyncIterator[MultiMesh]:
    instances: dict[str, list[Instance]] = {"stt": [], "llm": [], "tts": []}
    try:
        for service, servicers in (("stt", stt), ("llm", llm), ("tts", tts)):
            for servicer in servicers:
                instances[service].append(await _start(service, servicer))
        resolver = StaticResolver(
            {s: [i.address for i in insts] for s, insts in instances.items()} | {"tenant": []}
        )
        app = GatewayApp(
            settings or Settings(grace_period_s=1.0),
            resolver,
            catalog=BuiltinAgentCatalog(None),
            discovery=DiscoverySettings(tenant_addresses=""),
            redis_settings=RedisSettings(url=""),
        )
        port = await app.start()
        try:
            yield MultiMesh(instances, app, f"127.0.0.1:{port}")
        finally:
            await app.drain(0.5)
    finally:
        for insts in instances.values():
            for inst in insts:
                if not inst.stopped:
                    await inst.host.drain(0.5)
