"""Over quota, end to end over loopback gRPC: a handler admits calls through TenantQuotas on a
real Redis; the refused call gets RESOURCE_EXHAUSTED with its human message and google.rpc
RetryInfo + QuotaFailure in the ``grpc-status-details-bin`` trailer."""

from __future__ import annotations

import grpc
import grpc.aio
import redis.asyncio as aioredis
from google.rpc import code_pb2, error_details_pb2, status_pb2

from common import context
from common.errors import ResourceExhausted
from common.plans import PlanBook
from common.quotas import QuotaSettings, TenantQuotas
from common.redis_conn import RedisSettings
from common.server import ServiceBinding, ServiceHost
from common.settings import ServiceSettings
from tests.conftest import md, running

SERVICE = "test.v1.AdmitService"


def details_of(error: grpc.aio.AioRpcError) -> status_pb2.Status | None:
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            return status_pb2.Status.FromString(value)
    return None


def admitting_host(quotas: TenantQuotas) -> ServiceHost:
    async def admit(request: bytes, _ctx: grpc.aio.ServicerContext) -> bytes:
        if request == b"plain":
            raise ResourceExhausted("the outbox is full; read the stream")
        async with quotas.admit_call(context.tenant_id(), context.call_id()):
            return b"admitted"

    def add(server: grpc.aio.Server) -> None:
        handlers = {"Admit": grpc.unary_unary_rpc_method_handler(admit)}
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))

    return ServiceHost(ServiceSettings(), [ServiceBinding(SERVICE, add)])


async def test_over_quota_calls_get_retry_info_and_quota_failure(
    redis_client: aioredis.Redis, redis_settings: RedisSettings
) -> None:
    plans = PlanBook(overrides={"acme": {"requests_per_minute": 60, "burst": 2}})
    quotas = TenantQuotas(redis_client, plans, QuotaSettings(), prefix=redis_settings.key_prefix)
    async with running(admitting_host(quotas)) as addr, grpc.aio.insecure_channel(addr) as ch:
        admit = ch.unary_unary(f"/{SERVICE}/Admit")
        assert await admit(b"", metadata=md("c1", "acme")) == b"admitted"
        assert await admit(b"", metadata=md("c2", "acme")) == b"admitted"
        try:
            await admit(b"", metadata=md("c3", "acme"))
            raise AssertionError("the third request within the burst of 2 was admitted")
        except grpc.aio.AioRpcError as error:
            assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            message = error.details() or ""
            assert message.startswith("this tenant is over its 60 requests per minute (free plan); retry in")
            status = details_of(error)
        assert status is not None and status.code == code_pb2.RESOURCE_EXHAUSTED and status.message == message
        retry, quota = error_details_pb2.RetryInfo(), error_details_pb2.QuotaFailure()
        assert status.details[0].Unpack(retry) and status.details[1].Unpack(quota)
        assert 0.9 <= retry.retry_delay.ToTimedelta().total_seconds() <= 1.0
        assert [(v.subject, v.description) for v in quota.violations] == [
            ("requests_per_minute", "at most 60 requests per minute on the free plan")
        ]


async def test_resource_exhausted_without_a_hint_has_no_details(
    redis_client: aioredis.Redis, redis_settings: RedisSettings
) -> None:
    quotas = TenantQuotas(redis_client, PlanBook(), QuotaSettings(), prefix=redis_settings.key_prefix)
    async with running(admitting_host(quotas)) as addr, grpc.aio.insecure_channel(addr) as ch:
        try:
            await ch.unary_unary(f"/{SERVICE}/Admit")(b"plain", metadata=md())
            raise AssertionError("not refused")
        except grpc.aio.AioRpcError as error:
            assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert error.details() == "the outbox is full; read the stream"
            assert details_of(error) is None
