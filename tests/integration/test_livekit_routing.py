"""Routing a WebRTC caller from signed metadata, against a real tenant_svc: the token must be a
user token of one tenant that may place calls, and the agent must be that tenant's."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest

from common.auth import AuthSettings, build_auth, dev_signing_key, mint_dev_token
from common.discovery import ChannelPool
from gateway.livekit.routing import Caller, CallRouter, Refused
from tenant_svc.db.database import DatabaseSettings
from tests.credentials import KEY_DIR
from tests.doubles.mesh_services import ScriptedStt
from tests.integration.gateway_harness import scripted_mesh
from tests.integration.tenant_harness import TenantApi, tenant_api


@pytest.fixture(scope="module")
async def api(database_settings: DatabaseSettings, redis_url: str) -> AsyncIterator[TenantApi]:
    async with tenant_api(database_settings, KEY_DIR, redis_url) as running:
        yield running


@pytest.fixture
async def router(api: TenantApi, redis_url: str) -> AsyncIterator[CallRouter]:
    auth = build_auth(AuthSettings(mode="dev", dev_key_dir=KEY_DIR), issue_internal_tokens=True)
    assert auth.internal_issuer is not None
    async with scripted_mesh(ScriptedStt([]), tenant_address=api.address, redis_url=redis_url) as mesh:
        assert mesh.app.tenancy.catalog is not None
        pool = ChannelPool("tenant", mesh.app.resolver, propagate_context=False)
        try:
            yield CallRouter(
                catalog=mesh.app.tenancy.catalog,
                issuer=auth.internal_issuer,
                users=auth.authenticator,
                tenant_pool=pool,
            )
        finally:
            await pool.close()


def browser(token: str, agent_id: str, *, in_room: bool = False) -> Caller:
    metadata = json.dumps({"token": token, "agent_id": agent_id})
    if in_room:
        return Caller(identity="web-user", sip=False, room_metadata=metadata)
    return Caller(identity="web-user", sip=False, metadata=metadata)


def user_token(tenant: str | None, *roles: str) -> str:
    return mint_dev_token(dev_signing_key(KEY_DIR), tenant=tenant, roles=list(roles))


async def test_a_signed_user_of_the_tenant_reaches_its_agent(api: TenantApi, router: CallRouter) -> None:
    tenant = await api.new_tenant()
    await api.new_agent(tenant, "web-desk", "Answer web visitors.")
    for caller in (
        browser(user_token(tenant, "agent"), "web-desk"),
        browser(user_token(tenant, "admin"), "web-desk", in_room=True),  # room metadata also works
    ):
        route = await router.route(caller, "call-1")
        assert route.tenant_id == tenant and route.agent.agent_id == "web-desk"
        assert route.agent.system_prompt == "Answer web visitors." and route.principal.tenant_id == tenant


async def test_tokens_that_may_not_call_are_refused(api: TenantApi, router: CallRouter) -> None:
    mine, theirs = await api.new_tenant(), await api.new_tenant()
    await api.new_agent(theirs, "their-agent")
    await api.new_agent(mine, "web-desk")
    cases = {
        "bad_token": [
            browser(user_token(mine, "viewer"), "web-desk"),  # may read, not call
            browser(user_token(None, "platform"), "web-desk"),  # operators belong to no tenant
            browser("not.a.jwt", "web-desk"),
            browser(user_token(mine, "agent")[:-4] + "AAAA", "web-desk"),  # altered signature
        ],
        "agent_not_found": [browser(user_token(mine, "agent"), "their-agent")],
        "no_token": [
            Caller(identity="web-user", sip=False),
            Caller(identity="web-user", sip=False, metadata='{"agent_id": "web-desk"}'),
            Caller(identity="web-user", sip=False, metadata="[1, 2]"),
        ],
    }
    for reason, callers in cases.items():
        for caller in callers:
            with pytest.raises(Refused) as refused:
                await router.route(caller, "call-1")
            assert refused.value.reason == reason, (caller, refused.value.message)
