"""A whole call through the gateway with tenancy: neither a raw SQL dump of the tenant's rows
nor a Redis SCAN (during and after the call) shows the conversation's text."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import grpc.aio
import pytest
import redis.asyncio as aioredis
from psycopg_pool import AsyncConnectionPool

from common import context
from common.crypto import DataLoss, KekSettings, TenantKeyring, build_key_provider
from common.discovery import ChannelPool, StaticResolver
from common.gen.voiceai.tenant.v1 import resources_pb2 as pb
from common.gen.voiceai.tenant.v1 import tenant_service_pb2 as svc
from gateway.history_crypto import HistorySealer
from tenant_svc.db.database import DatabaseSettings, endpoints
from tenant_svc.protection import DataProtection
from tenant_svc.repository import Repository
from tests.caller import ConverseCaller
from tests.credentials import KEY_DIR
from tests.doubles.mesh_services import ScriptedStt, tone
from tests.integration.gateway_harness import scripted_mesh
from tests.integration.tenant_harness import TenantApi, tenant_api
from tests.integration.test_data_protection import internal_md, owner_dump
from tests.integration.test_gateway_tenancy import caller_md, config, wait_for_record

WORDS = ("pelican", "marmalade")


@pytest.fixture(scope="module")
async def api(database_settings: DatabaseSettings, redis_url: str) -> AsyncIterator[TenantApi]:
    async with tenant_api(database_settings, KEY_DIR, redis_url) as running:
        yield running


async def redis_dump(redis_url: str) -> bytes:
    """Every key and every value in Redis (strings, lists, hashes), as a SCAN would find them."""
    client = aioredis.from_url(redis_url)
    out = []
    try:
        async for key in client.scan_iter(count=1000):
            out.append(key)
            kind = (await client.type(key)).decode()
            if kind == "string":
                out.append(await client.get(key) or b"")
            elif kind == "list":
                out.extend(await client.lrange(key, 0, -1))
            elif kind == "hash":
                for k, v in (await client.hgetall(key)).items():
                    out += [k, v]
    finally:
        await client.aclose()
    return b"\n".join(out)


async def test_no_readable_transcript_in_postgres_redis_or_logs(
    api: TenantApi, redis_url: str, database_settings: DatabaseSettings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    admin_url = endpoints(database_settings).admin_url
    if not admin_url:
        pytest.skip("needs the owner's URL to read raw rows")
    tenant = await api.new_tenant()
    await api.stub.CreateAgent(
        svc.CreateAgentRequest(
            parent=f"tenants/{tenant}",
            agent=pb.Agent(system_prompt="Be brief.", greeting="Hello there."),
            agent_id="reception",
        ),
        metadata=api.md(tenant, "admin"),
    )
    stt = ScriptedStt([f"the {WORDS[0]} ate my homework", f"{WORDS[1]} please, bye."])
    async with (
        scripted_mesh(stt, tenant_address=api.address, redis_url=redis_url) as mesh,
        grpc.aio.insecure_channel(mesh.address) as ch,
    ):
        async with ConverseCaller(ch, config("reception"), metadata=caller_md(tenant)) as caller:
            await caller.wait_for(lambda c: c.of("agent_speech"))
            await caller.silence(1500)
            for turn in (1, 2):
                await caller.send_pcm(tone(700))
                await caller.wait_for(caller.turn_done(turn), timeout=10)
            during = await redis_dump(redis_url)
            await caller.hangup()
    record = await wait_for_record(api, tenant)
    said = " ".join(t.caller_text + " " + t.agent_text for t in record.turns)
    assert all(w in said for w in WORDS)  # the record reads back through the API
    assert tenant.encode() in during  # the SCAN did see this call's keys
    after = await redis_dump(redis_url)
    dump = await owner_dump(admin_url, tenant)
    assert {r.name.split(".")[0] for r in caplog.records} >= {"gateway"}  # the logs were captured
    for word in WORDS:
        assert word.encode() not in during and word.encode() not in after
        assert word not in dump
        assert word not in caplog.text  # the gateway, stt/llm/tts doubles and tenant_svc log here


async def test_history_entries_are_bound_to_their_call_and_die_with_the_tenants_keys(
    api: TenantApi, pg_pool: AsyncConnectionPool
) -> None:
    tenant = await api.new_tenant()
    pool = ChannelPool("tenant", StaticResolver({"tenant": [api.address]}))
    clock = [0.0]
    sealer = HistorySealer(pool, ttl_s=30.0, clock=lambda: clock[0])
    md = dict(internal_md(api, tenant, "tenant"))
    context.bind(context.RequestContext(tenant_id=tenant, call_id="c1", authorization=md["authorization"]))
    try:
        sealed = await sealer.seal(tenant, "c1", b"the pelican")
        assert b"pelican" not in sealed
        assert await sealer.open(tenant, "c1", sealed) == b"the pelican"
        with pytest.raises(DataLoss, match="history"):
            await sealer.open(tenant, "c2", sealed)  # copied into another call
        keyring = TenantKeyring(await build_key_provider(KekSettings()))
        async with Repository(pg_pool).tenant(tenant) as scope:
            await DataProtection(keyring).shred(scope)
        clock[0] += 31  # past the cache's TTL
        with pytest.raises(DataLoss):
            await sealer.open(tenant, "c1", sealed)
    finally:
        context.bind(None)  # type: ignore[arg-type]
        await pool.close()
