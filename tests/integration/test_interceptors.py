"""The context interceptors over real loopback gRPC, for every RPC kind: tenant and call ids are
required and bound inside handlers, the client side carries them to the next hop, domain errors
become their status codes, and health and reflection stay open to probes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc
import grpc.aio
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from common import context
from common.discovery import ChannelPool, StaticResolver
from common.errors import NotFound, ResourceExhausted
from common.gen.voiceai.llm.v1 import llm_pb2
from common.server import ServiceBinding, ServiceHost
from common.settings import ServiceSettings
from tests.conftest import md, running

T = TypeVar("T")
SERVICE = "test.v1.ProbeService"
Handler = Callable[..., Any]


def whoami() -> bytes:
    c = context.current()
    assert c is not None, "no request context bound inside the handler"
    return f"{c.tenant_id}|{c.call_id}|{c.authorization}|{c.traceparent}".encode()


def act(said: bytes) -> None:
    """Requests choose a failure: a domain error, or an unexpected one with a secret in it."""
    if said == b"missing":
        raise NotFound("no such agent: check the agent id")
    if said == b"quota":
        raise ResourceExhausted("too many concurrent calls for this tenant; retry in 5 s")
    if said == b"boom":
        raise RuntimeError("secret internal detail")


class Probe:
    """One method per RPC kind, each answering with the request context it sees.

    ``Forward`` calls ``Whoami`` on the next hop through a ChannelPool, as a real service would.
    """

    def __init__(self, next_hop: ChannelPool | None = None) -> None:
        self.next_hop = next_hop

    async def whoami(self, request: bytes, _ctx: grpc.aio.ServicerContext) -> bytes:
        act(request)
        return whoami()

    async def listen(self, request: bytes, _ctx: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
        yield whoami()
        await asyncio.sleep(0)
        act(request)  # fails after a first response was sent
        yield whoami()

    async def count(self, requests: AsyncIterator[bytes], _ctx: grpc.aio.ServicerContext) -> bytes:
        n = 0
        async for r in requests:
            act(r)
            n += 1
        return whoami() + b"|%d" % n

    async def chat(
        self, requests: AsyncIterator[llm_pb2.ChatMessage], _ctx: grpc.aio.ServicerContext
    ) -> AsyncIterator[bytes]:
        async for message in requests:
            act(message.content.encode())
            await asyncio.sleep(0.01)  # lets concurrent calls interleave
            yield whoami() + b"|" + message.content.encode()

    async def forward(self, request: bytes, _ctx: grpc.aio.ServicerContext) -> bytes:
        assert self.next_hop is not None
        async with self.next_hop.stream() as ch:
            return await ch.unary_unary(f"/{SERVICE}/Whoami")(request)  # type: ignore[no-any-return]

    def add_to(self, server: grpc.aio.Server) -> None:
        handlers = {
            "Whoami": grpc.unary_unary_rpc_method_handler(self.whoami),
            "Listen": grpc.unary_stream_rpc_method_handler(self.listen),
            "Count": grpc.stream_unary_rpc_method_handler(self.count),
            "Chat": grpc.stream_stream_rpc_method_handler(
                self.chat, request_deserializer=llm_pb2.ChatMessage.FromString
            ),
            "Forward": grpc.unary_unary_rpc_method_handler(self.forward),
        }
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))


def host(probe: Probe | None = None, require_call_id: bool = True) -> ServiceHost:
    probe = probe or Probe()
    return ServiceHost(
        ServiceSettings(), [ServiceBinding(SERVICE, probe.add_to)], require_call_id=require_call_id
    )


def chat_message(text: str) -> bytes:
    return llm_pb2.ChatMessage(role=llm_pb2.ROLE_USER, content=text).SerializeToString()


async def call_kind(ch: grpc.aio.Channel, kind: str, payload: bytes = b"hi", **kw: Any) -> list[bytes]:
    """One call of the given kind; returns every response."""
    path = f"/{SERVICE}/{kind}"
    if kind in ("Whoami", "Forward"):
        return [await ch.unary_unary(path)(payload, **kw)]
    if kind == "Listen":
        return [r async for r in ch.unary_stream(path)(payload, **kw)]
    if kind == "Count":
        return [await ch.stream_unary(path)(iter([payload, payload]), **kw)]
    return [r async for r in ch.stream_stream(path)(iter([chat_message(payload.decode())]), **kw)]


KINDS = ["Whoami", "Listen", "Count", "Chat"]
ID_RULE = "must be 1-128 characters of letters, digits"


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    ("metadata", "code", "fragment"),
    [
        (
            (),
            grpc.StatusCode.UNAUTHENTICATED,
            "missing 'x-tenant-id' metadata: every call must name its tenant",
        ),
        ((("x-call-id", "c1"),), grpc.StatusCode.UNAUTHENTICATED, "missing 'x-tenant-id'"),
        ((("x-tenant-id", "t1"),), grpc.StatusCode.INVALID_ARGUMENT, "missing 'x-call-id' metadata"),
        ((("x-tenant-id", "bad tenant!"), ("x-call-id", "c")), grpc.StatusCode.INVALID_ARGUMENT, ID_RULE),
        ((("x-tenant-id", "-lead"), ("x-call-id", "c")), grpc.StatusCode.INVALID_ARGUMENT, ID_RULE),
        (
            (("x-tenant-id", "t"), ("x-call-id", "x" * 129)),
            grpc.StatusCode.INVALID_ARGUMENT,
            "1-63 lowercase",
        ),
        ((("x-tenant-id", "t"), ("x-call-id", "c/../d")), grpc.StatusCode.INVALID_ARGUMENT, "'x-call-id'"),
    ],
)
async def test_tenant_and_call_ids_are_required_and_checked(
    kind: str, metadata: tuple[tuple[str, str], ...], code: grpc.StatusCode, fragment: str
) -> None:
    async with running(host()) as addr, grpc.aio.insecure_channel(addr) as ch:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call_kind(ch, kind, metadata=metadata)
        assert info.value.code() == code
        assert fragment in (info.value.details() or ""), info.value.details()


async def test_call_id_is_optional_at_the_edge_and_then_generated() -> None:
    async with running(host(require_call_id=False)) as addr, grpc.aio.insecure_channel(addr) as ch:
        tenant, call, _, _ = (await call_kind(ch, "Whoami", metadata=(("x-tenant-id", "t1"),)))[0].split(b"|")
        assert tenant == b"t1" and len(call) == 32 and int(call, 16) >= 0


@pytest.mark.parametrize("kind", KINDS)
async def test_the_context_is_bound_inside_handlers(kind: str) -> None:
    meta = (*md("call-7", "tenant-x"), ("authorization", "Bearer abc"), ("traceparent", "00-ab-cd-01"))
    async with running(host()) as addr, grpc.aio.insecure_channel(addr) as ch:
        for response in await call_kind(ch, kind, metadata=meta):
            assert response.startswith(b"tenant-x|call-7|Bearer abc|00-ab-cd-01")


async def test_concurrent_calls_each_see_their_own_context() -> None:
    async with running(host()) as addr, grpc.aio.insecure_channel(addr) as ch:
        calls = [call_kind(ch, "Chat", b"turn", metadata=md(f"call-{i}", f"tenant-{i}")) for i in range(20)]
        results = await asyncio.gather(*calls)
        assert [r[0].split(b"|")[:2] for r in results] == [
            [f"tenant-{i}".encode(), f"call-{i}".encode()] for i in range(20)
        ]


async def test_health_and_reflection_need_no_metadata() -> None:
    async with running(host()) as addr, grpc.aio.insecure_channel(addr) as ch:
        health = health_pb2_grpc.HealthStub(ch)
        assert (
            await health.Check(health_pb2.HealthCheckRequest())
        ).status == health_pb2.HealthCheckResponse.SERVING
        named = await health.Check(health_pb2.HealthCheckRequest(service=SERVICE))
        assert named.status == health_pb2.HealthCheckResponse.SERVING
        refl = reflection_pb2_grpc.ServerReflectionStub(ch).ServerReflectionInfo()
        await refl.write(reflection_pb2.ServerReflectionRequest(list_services=""))
        names = {s.name for s in (await refl.read()).list_services_response.service}
        await refl.done_writing()
        assert {SERVICE, "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= names


async def in_task(coro: Awaitable[T]) -> T:
    """Run ``coro`` in its own task so context bound there does not leak into other tests."""
    return await asyncio.ensure_future(coro)


async def test_the_next_hop_receives_the_context_of_the_call_it_serves() -> None:
    async with running(host()) as b_addr:
        pool_b = ChannelPool("b", StaticResolver({"b": [b_addr]}))
        try:
            async with (
                running(host(Probe(next_hop=pool_b))) as a_addr,
                grpc.aio.insecure_channel(a_addr) as ch,
            ):
                meta = (
                    *md("call-9", "tenant-q"),
                    ("authorization", "Bearer tok"),
                    ("traceparent", "00-1-2-01"),
                )
                assert await call_kind(ch, "Forward", metadata=meta) == [
                    b"tenant-q|call-9|Bearer tok|00-1-2-01"
                ]
                with pytest.raises(grpc.aio.AioRpcError) as info:  # B's error comes back through A
                    await call_kind(ch, "Forward", b"boom", metadata=md())
                assert info.value.code() == grpc.StatusCode.INTERNAL
        finally:
            await pool_b.close()


async def test_client_interceptors_propagate_for_every_kind_and_explicit_metadata_wins() -> None:
    async def as_bound_caller(addr: str) -> None:
        context.bind(context.RequestContext("tenant-a", "call-b", "Bearer t"))
        pool = ChannelPool("probe", StaticResolver({"probe": [addr]}))
        try:
            async with pool.stream() as ch:
                for kind in KINDS:
                    for response in await call_kind(ch, kind):
                        assert response.startswith(b"tenant-a|call-b|Bearer t|"), (kind, response)
                explicit = await call_kind(ch, "Whoami", metadata=(("x-call-id", "other"),))
                assert explicit == [b"tenant-a|other|Bearer t|"]
                assert pool.in_flight() == {addr: 1}
            assert pool.in_flight() == {addr: 0}
        finally:
            await pool.close()

    async with running(host()) as addr:
        await in_task(as_bound_caller(addr))
        # Without a bound context nothing is added: the server refuses the call.
        pool = ChannelPool("probe", StaticResolver({"probe": [addr]}))
        try:
            async with pool.stream() as ch:
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await call_kind(ch, "Whoami")
                assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        finally:
            await pool.close()


@pytest.mark.parametrize("kind", KINDS)
async def test_errors_map_to_codes_without_leaking_and_the_server_keeps_serving(kind: str) -> None:
    async with running(host()) as addr, grpc.aio.insecure_channel(addr) as ch:
        for said, code, details in [
            (b"missing", grpc.StatusCode.NOT_FOUND, "no such agent: check the agent id"),
            (
                b"quota",
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                "too many concurrent calls for this tenant; retry in 5 s",
            ),
        ]:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await call_kind(ch, kind, said, metadata=md())
            assert (info.value.code(), info.value.details()) == (code, details)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call_kind(ch, kind, b"boom", metadata=md("call-boom"))
        assert info.value.code() == grpc.StatusCode.INTERNAL
        details = info.value.details() or ""
        assert "secret" not in details and "RuntimeError" not in details
        assert "call-boom" in details  # enough to find the logged traceback
        assert (await call_kind(ch, kind, metadata=md()))[0].startswith(b"tenant-test|call-test|")


@pytest.mark.parametrize("kind", ["Listen", "Chat"])
async def test_requests_that_do_not_parse_are_invalid_argument(kind: str) -> None:
    """Invalid UTF-8 in a string field, in a unary request (parsed before the handler runs) and
    in a streamed one (parsed as the handler reads)."""
    bad = b"\x08\x02\x12\x02\xff\xfe"  # ChatMessage{role: USER, content: 0xFF 0xFE}
    listen = ServiceBinding(
        "test.v1.Typed",
        lambda s: s.add_generic_rpc_handlers(
            (
                grpc.method_handlers_generic_handler(
                    "test.v1.Typed",
                    {
                        "Listen": grpc.unary_stream_rpc_method_handler(
                            Probe().listen, request_deserializer=llm_pb2.ChatMessage.FromString
                        )
                    },
                ),
            )
        ),
    )
    probe = Probe()
    h = ServiceHost(ServiceSettings(), [ServiceBinding(SERVICE, probe.add_to), listen])
    async with running(h) as addr, grpc.aio.insecure_channel(addr) as ch:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            if kind == "Listen":
                async for _ in ch.unary_stream("/test.v1.Typed/Listen")(bad, metadata=md()):
                    pass
            else:
                async for _ in ch.stream_stream(f"/{SERVICE}/Chat")(iter([bad]), metadata=md()):
                    pass
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "must be valid UTF-8" in (info.value.details() or "")
        assert await call_kind(ch, "Chat", metadata=md())  # still serving
