"""The call-id rule at both ends: the gateway's edge and tenant_svc decide every shape alike."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import grpc.aio
import pytest

from common.call_ids import valid_call_id
from common.gen.voiceai.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from common.gen.voiceai.tenant.v1 import resources_pb2 as pb
from common.gen.voiceai.tenant.v1 import tenant_service_pb2 as svc
from tenant_svc.db.database import DatabaseSettings
from tests.credentials import bearer
from tests.doubles.mesh_services import ScriptedStt
from tests.integration.gateway_harness import inline_config, scripted_mesh
from tests.integration.tenant_harness import TenantApi, tenant_api
from tests.unit.test_call_ids import SHAPES

# gRPC metadata carries printable ASCII only: the other shapes cannot reach the edge at all.
EDGE_SHAPES = [(value, ok) for value, ok in SHAPES if value and value.isascii() and value.isprintable()]


@pytest.fixture(scope="module")
async def api(
    database_settings: DatabaseSettings, tmp_path_factory: pytest.TempPathFactory, redis_url: str
) -> AsyncIterator[TenantApi]:
    async with tenant_api(database_settings, Path(tmp_path_factory.mktemp("dev-auth")), redis_url) as running:
        yield running


async def _gateway_decision(ch: grpc.aio.Channel, call_id: str) -> tuple[bool, str]:
    """Whether the gateway starts a call under ``call_id``, and the id it reports or the error."""
    md = (("x-tenant-id", "tenant-test"), ("x-call-id", call_id), bearer("tenant-test"))
    call = gateway_pb2_grpc.CallGatewayServiceStub(ch).Converse(metadata=md)
    try:
        await call.write(gateway_pb2.ConverseRequest(config=inline_config()))
        async for response in call:
            if response.WhichOneof("event") == "call_started":
                return True, response.call_started.call_id
        return False, "ended without call_started"
    except grpc.aio.AioRpcError as e:
        assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, e.details()
        return False, e.details() or ""
    finally:
        call.cancel()


async def test_the_edge_and_tenant_svc_make_the_same_decision(api: TenantApi) -> None:
    tenant = await api.new_tenant()
    async with scripted_mesh(ScriptedStt([])) as mesh, grpc.aio.insecure_channel(mesh.address) as ch:
        for value, ok in EDGE_SHAPES:
            started, said = await _gateway_decision(ch, value)
            assert started is ok, f"gateway on {value!r}: {said}"
            assert said == value if ok else "'x-call-id' must be 1-63 lowercase" in said
    for value, ok in SHAPES:
        request = svc.CreateCallRequest(
            parent=f"tenants/{tenant}", call=pb.Call(status=pb.CALL_STATUS_COMPLETED), call_id=value
        )
        if ok:
            created = await api.stub.CreateCall(request, metadata=api.md(tenant, "agent"))
            assert created.name == f"tenants/{tenant}/calls/{value}"
        else:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await api.stub.CreateCall(request, metadata=api.md(tenant, "agent"))
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, value
            details = info.value.details() or ""
            # A NUL is refused by the request limits before the id rule: the same decision.
            assert details.startswith("call_id ") and ("lowercase" in details or "NUL" in details)


async def test_a_call_without_an_id_gets_one_that_tenant_svc_accepts() -> None:
    async with scripted_mesh(ScriptedStt([])) as mesh, grpc.aio.insecure_channel(mesh.address) as ch:
        md = (("x-tenant-id", "tenant-test"), bearer("tenant-test"))
        call = gateway_pb2_grpc.CallGatewayServiceStub(ch).Converse(metadata=md)
        await call.write(gateway_pb2.ConverseRequest(config=inline_config()))
        async for response in call:
            if response.WhichOneof("event") == "call_started":
                minted = response.call_started.call_id
                break
        call.cancel()
    assert valid_call_id(minted)
