"""Row-level security holds even when the code forgets: the app role, a pooled connection, a
raw query without the tenant setting, and owner-only lookups."""

from __future__ import annotations

import uuid

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from common.errors import AlreadyExists, FailedPrecondition, NotFound
from common.gen.voiceai.tenant.v1 import resources_pb2 as pb
from tenant_svc.repository import Repository


def tid() -> str:
    return f"t-{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def two_tenants(pg_pool: AsyncConnectionPool) -> tuple[Repository, str, str]:
    repo = Repository(pg_pool)
    a, b = tid(), tid()
    async with repo.platform() as p:
        await p.create_tenant(a, "A", pb.PLAN_TIER_FREE)
        await p.create_tenant(b, "B", pb.PLAN_TIER_PRO)
    for t in (a, b):
        async with repo.tenant(t) as scope:
            await scope.insert_agent("front-desk", pb.Agent(system_prompt=f"agent of {t}"))
    return repo, a, b


async def test_app_role_is_not_owner_superuser_or_bypassrls(pg_pool: AsyncConnectionPool) -> None:
    async with pg_pool.connection() as conn:
        cur = await conn.execute("SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user")
        assert await cur.fetchone() == (False, False)
        cur = await conn.execute(
            "SELECT relname FROM pg_class WHERE relrowsecurity AND relforcerowsecurity"
            " AND relname IN ('tenants','agents','phone_numbers','api_keys','calls','audit_log')"
        )
        assert len(await cur.fetchall()) == 6


async def test_raw_query_without_tenant_setting_sees_nothing(two_tenants) -> None:  # type: ignore[no-untyped-def]
    repo, _a, _b = two_tenants
    async with repo._pool.connection() as conn:
        for table in ("tenants", "agents", "phone_numbers", "api_keys", "calls", "audit_log"):
            cur = await conn.execute(f"SELECT count(*) FROM {table}")  # type: ignore[arg-type]
            assert await cur.fetchone() == (0,), table
        # Writing without a tenant is refused by the policy's WITH CHECK.
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            await conn.execute("INSERT INTO agents (tenant_id, id, system_prompt) VALUES ('x', 'y', 'z')")


async def test_pooled_connection_reused_after_tenant_a_sees_none_of_a(pg_pool: AsyncConnectionPool) -> None:
    repo = Repository(pg_pool)
    a = tid()
    async with repo.platform() as p:
        await p.create_tenant(a, "A", pb.PLAN_TIER_FREE)
    # A pool of one connection: the next transaction necessarily reuses A's connection.
    single = AsyncConnectionPool(pg_pool.conninfo, min_size=1, max_size=1, open=False)
    await single.open(wait=True)
    try:
        solo = Repository(single)
        async with solo.tenant(a) as scope:
            await scope.insert_agent("a1", pb.Agent(system_prompt="secret of A"))
            assert [x.name for x in await scope.list_agents("", 10)] == [f"tenants/{a}/agents/a1"]
        async with single.connection() as conn:
            cur = await conn.execute("SELECT count(*) FROM agents")
            assert await cur.fetchone() == (0,)
            cur = await conn.execute("SELECT current_setting('voiceai.tenant_id', true)")
            assert (await cur.fetchone() or ("",))[0] in ("", None)
        async with solo.tenant(tid()) as other:
            assert await other.list_agents("", 10) == []
    finally:
        await single.close()


async def test_other_tenants_rows_are_invisible_and_untouchable(two_tenants) -> None:  # type: ignore[no-untyped-def]
    repo, a, b = two_tenants
    async with repo.tenant(a) as scope:
        assert [x.system_prompt for x in await scope.list_agents("", 10)] == [f"agent of {a}"]
        assert (await scope.get_tenant()).name == f"tenants/{a}"
    async with repo.tenant(b) as scope:
        await scope.delete_agent("front-desk")
    async with repo.tenant(a) as scope:  # b's delete of the same id never reached a's row
        assert (await scope.get_agent("front-desk")).system_prompt == f"agent of {a}"
    async with repo.tenant(b) as scope:
        with pytest.raises(NotFound):
            await scope.get_agent("front-desk")


async def test_phone_number_unique_across_tenants_without_saying_whose(two_tenants) -> None:  # type: ignore[no-untyped-def]
    repo, a, b = two_tenants
    number = f"+1415{uuid.uuid4().int % 10**7:07d}"
    async with repo.tenant(a) as scope:
        await scope.insert_phone_number("main", number, "front-desk")
    with pytest.raises(AlreadyExists) as caught:
        async with repo.tenant(b) as scope:
            await scope.insert_phone_number("main", number, "front-desk")
    assert a not in caught.value.message
    route = await repo.lookup_phone_number(number)
    assert route is not None and route.tenant_id == a
    with pytest.raises(FailedPrecondition):
        async with repo.tenant(a) as scope:
            await scope.delete_agent("front-desk")  # still answering the number


async def test_injection_strings_are_stored_verbatim(two_tenants) -> None:  # type: ignore[no-untyped-def]
    repo, a, _ = two_tenants
    nasty = "'); DROP TABLE agents; -- \" \\ %s %(x)s \u202e 🙂"
    async with repo.tenant(a) as scope:
        stored = await scope.insert_agent(
            "nasty", pb.Agent(system_prompt=nasty, greeting=nasty, keyterms=[nasty])
        )
        again = await scope.get_agent("nasty")
    assert stored.system_prompt == again.system_prompt == nasty
    assert list(again.keyterms) == [nasty]
