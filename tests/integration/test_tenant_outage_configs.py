"""tenant_svc (or its database) down: the gateway keeps serving the agent configs it has seen,
and an agent it never loaded is refused naming the tenant service, not a generic error."""

from __future__ import annotations

import contextlib

import grpc
import grpc.aio

from common.gen.voiceai.gateway.v1 import gateway_pb2
from tenant_svc.db.database import DatabaseSettings
from tests.caller import ConverseCaller, linear16
from tests.credentials import KEY_DIR, bearer
from tests.doubles.mesh_services import ScriptedStt
from tests.integration.gateway_harness import scripted_mesh
from tests.integration.tenant_harness import tenant_api


def config(agent_id: str) -> gateway_pb2.CallConfig:
    return gateway_pb2.CallConfig(agent_id=agent_id, caller_audio_format=linear16())


async def test_known_agents_keep_answering_while_tenant_svc_is_down(
    database_settings: DatabaseSettings,
) -> None:
    async with contextlib.AsyncExitStack() as tenant_side:
        api = await tenant_side.enter_async_context(tenant_api(database_settings, KEY_DIR))
        tenant = await api.new_tenant()
        await api.new_agent(tenant, "reception", "Be brief.")
        await api.new_agent(tenant, "never-loaded")
        md = (("x-tenant-id", tenant), bearer(tenant))
        async with (
            scripted_mesh(ScriptedStt([]), tenant_address=api.address) as mesh,
            grpc.aio.insecure_channel(mesh.address) as ch,
        ):
            async with ConverseCaller(ch, config("reception"), metadata=md) as first:
                await first.wait_for(lambda c: c.of("call_started"))
            await tenant_side.aclose()  # tenant_svc stops
            async with ConverseCaller(ch, config("reception"), metadata=md) as second:
                await second.wait_for(lambda c: c.of("call_started") or c.error, keep_talking=False)
            assert second.error is None and second.of("call_started")
            async with ConverseCaller(ch, config("never-loaded"), metadata=md) as unknown:
                await unknown.wait_for(lambda c: c.error, keep_talking=False)
            assert unknown.error is not None and unknown.error.code() == grpc.StatusCode.UNAVAILABLE
            assert "tenant service" in (unknown.error.details() or "")
