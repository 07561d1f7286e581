"""The shared runtime over real loopback gRPC: context interceptors, error mapping, health,
reflection, metrics and graceful drain."""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import AsyncIterator

import grpc
import grpc.aio
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from common import context
from common.discovery import ChannelPool, StaticResolver
from common.errors import NotFound
from common.gen.voiceai.llm.v1 import llm_pb2, llm_pb2_grpc
from common.server import ServiceBinding, ServiceHost
from common.settings import ServiceSettings
from tests.conftest import running

REQ = llm_pb2.StreamChatRequest(messages=[llm_pb2.ChatMessage(role=llm_pb2.ROLE_USER, content="hi")])


class Echo(llm_pb2_grpc.LanguageModelServiceServicer):
    """Answers with the bound request context; content selects failures and slow streams."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.finished = 0
        self.cancelled = 0

    async def StreamChat(self, request, ctx) -> AsyncIterator[llm_pb2.StreamChatResponse]:  # type: ignore[no-untyped-def]  # noqa: N802
        c = context.current()
        assert c is not None
        said = request.messages[0].content
        if said == "missing":
            raise NotFound("no such thing: check the id")
        if said == "boom":
            raise RuntimeError("secret internal detail")
        if said.startswith("slow"):
            self.started.set()
            try:
                await asyncio.sleep(float(said.split()[1]))
            except asyncio.CancelledError:
                self.cancelled += 1
                raise
            self.finished += 1
        yield llm_pb2.StreamChatResponse(
            delta=llm_pb2.TokenDelta(text=f"{c.tenant_id}|{c.call_id}|{c.authorization}")
        )


def host(servicer: Echo, **settings: object) -> ServiceHost:
    return ServiceHost(
        ServiceSettings(**settings),  # type: ignore[arg-type]
        [
            ServiceBinding(
                "voiceai.llm.v1.LanguageModelService",
                lambda s: llm_pb2_grpc.add_LanguageModelServiceServicer_to_server(servicer, s),
            )
        ],
    )


async def first_text(
    stub: llm_pb2_grpc.LanguageModelServiceStub, req: llm_pb2.StreamChatRequest = REQ, **kw
) -> str:  # type: ignore[no-untyped-def]
    async for r in stub.StreamChat(req, **kw):
        return r.delta.text
    return ""


def _req(text: str) -> llm_pb2.StreamChatRequest:
    return llm_pb2.StreamChatRequest(messages=[llm_pb2.ChatMessage(role=llm_pb2.ROLE_USER, content=text)])


@pytest.mark.parametrize(
    ("metadata", "code", "fragment"),
    [
        ((), grpc.StatusCode.UNAUTHENTICATED, "missing 'x-tenant-id'"),
        ((("x-tenant-id", "t1"),), grpc.StatusCode.INVALID_ARGUMENT, "missing 'x-call-id'"),
        (
            (("x-tenant-id", "bad tenant!"), ("x-call-id", "c")),
            grpc.StatusCode.INVALID_ARGUMENT,
            "'x-tenant-id' must be",
        ),
        (
            (("x-tenant-id", "t"), ("x-call-id", "x" * 200)),
            grpc.StatusCode.INVALID_ARGUMENT,
            "'x-call-id' must be",
        ),
    ],
)
async def test_context_is_required(metadata, code, fragment) -> None:  # type: ignore[no-untyped-def]
    async with running(host(Echo())) as addr, grpc.aio.insecure_channel(addr) as ch:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await first_text(llm_pb2_grpc.LanguageModelServiceStub(ch), metadata=metadata)
        assert info.value.code() == code and fragment in (info.value.details() or "")


def plain(call_id: str = "call-test") -> tuple[tuple[str, str], ...]:
    """Tenant and call only: this host has no credential check."""
    return (("x-tenant-id", "tenant-test"), ("x-call-id", call_id))


async def test_context_bound_errors_mapped_and_health_reflection_open() -> None:
    async with running(host(Echo())) as addr, grpc.aio.insecure_channel(addr) as ch:
        stub = llm_pb2_grpc.LanguageModelServiceStub(ch)
        assert (
            await first_text(stub, metadata=plain("c-1") + (("authorization", "Bearer abc"),))
            == "tenant-test|c-1|Bearer abc"
        )
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await first_text(stub, _req("missing"), metadata=plain())
        assert (
            info.value.code() == grpc.StatusCode.NOT_FOUND
            and info.value.details() == "no such thing: check the id"
        )
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await first_text(stub, _req("boom"), metadata=plain("c-9"))
        assert info.value.code() == grpc.StatusCode.INTERNAL
        assert "secret" not in (info.value.details() or "") and "c-9" in (info.value.details() or "")
        assert await first_text(stub, metadata=plain()) == "tenant-test|call-test|"  # still serving
        # No metadata needed for health and reflection (probes, Consul checks, grpcurl).
        health = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=""))
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        refl = reflection_pb2_grpc.ServerReflectionStub(ch).ServerReflectionInfo()
        await refl.write(reflection_pb2.ServerReflectionRequest(list_services=""))
        names = {s.name for s in (await refl.read()).list_services_response.service}
        refl.cancel()
        assert {"voiceai.llm.v1.LanguageModelService", "grpc.health.v1.Health"} <= names


async def test_client_interceptors_propagate_the_bound_context() -> None:
    async with running(host(Echo())) as addr:
        pool = ChannelPool("llm", StaticResolver({"llm": [addr]}))
        try:
            context.bind(context.RequestContext("tenant-a", "call-b", "Bearer t"))
            async with pool.stream() as ch:
                stub = llm_pb2_grpc.LanguageModelServiceStub(ch)
                assert await first_text(stub) == "tenant-a|call-b|Bearer t"
                # Explicit metadata wins over the bound context.
                assert await first_text(stub, metadata=(("x-call-id", "other"),)) == "tenant-a|other|Bearer t"
                assert pool.in_flight() == {addr: 1}
            assert pool.in_flight() == {addr: 0}
        finally:
            context.bind(None)  # type: ignore[arg-type]
            await pool.close()


async def test_drain_finishes_open_streams_refuses_new_ones_then_cancels_stragglers() -> None:
    echo = Echo()
    h = host(echo, metrics_port=0, drain_notice_s=0.3)
    addr = f"127.0.0.1:{await h.start()}"
    url = f"http://127.0.0.1:{h.metrics_port}/metrics"
    text = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=5).read().decode())
    assert "python_info" in text or "process_" in text
    async with grpc.aio.insecure_channel(addr) as ch:
        stub = llm_pb2_grpc.LanguageModelServiceStub(ch)
        short = asyncio.ensure_future(first_text(stub, _req("slow 0.4"), metadata=plain("short")))
        long = asyncio.ensure_future(first_text(stub, _req("slow 30"), metadata=plain("long")))
        await echo.started.wait()
        await asyncio.sleep(0.1)
        drain = asyncio.ensure_future(h.drain(grace=1.0))
        await asyncio.sleep(0.1)
        status = (await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest())).status
        await asyncio.sleep(0.4)  # past the notice: the server now refuses new RPCs
        with pytest.raises(grpc.aio.AioRpcError):
            await first_text(stub, metadata=plain("new"), timeout=1)
        assert await short == "tenant-test|short|"  # finished within the grace period
        with pytest.raises(grpc.aio.AioRpcError):
            await long  # still running at the end of the grace period: cancelled
        await drain
    assert status == health_pb2.HealthCheckResponse.NOT_SERVING
    assert echo.finished == 1 and echo.cancelled == 1
