"""Data protection in tenant_svc over real gRPC and PostgreSQL: sealed transcripts (a raw dump
shows none), PII redaction per agent, DATA_LOSS for one corrupted field, crypto-shredding,
data-key rotation with lazy re-encryption, BYOK keys (never returned; internal path only)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import psycopg
import pytest
from google.protobuf import field_mask_pb2
from psycopg_pool import AsyncConnectionPool

from common.auth import dev_signing_key
from common.auth.internal import InternalTokenIssuer
from common.auth.keys import DEV_INTERNAL_KEY_NAME
from common.auth.principal import Principal
from common.crypto import KekSettings, TenantKeyring, build_key_provider
from common.crypto.envelope import key_version
from common.gen.voiceai.tenant.v1 import data_protection_service_pb2 as dp
from common.gen.voiceai.tenant.v1 import data_protection_service_pb2_grpc as dp_grpc
from common.gen.voiceai.tenant.v1 import provider_key_internal_service_pb2 as pki
from common.gen.voiceai.tenant.v1 import provider_key_internal_service_pb2_grpc as pki_grpc
from common.gen.voiceai.tenant.v1 import resources_pb2 as pb
from common.gen.voiceai.tenant.v1 import tenant_service_pb2 as svc
from tenant_svc.db.database import DatabaseSettings, endpoints
from tenant_svc.protection import DataProtection
from tenant_svc.repository import Repository
from tests.integration.tenant_harness import TenantApi, tenant_api

SECRET_TEXT = "my card is 4111 1111 1111 1111 and I live on Zebra Street"
OPENAI_KEY = "sk-tenant-a-0123456789abcdefWXYZ"


@pytest.fixture(scope="module")
async def api(
    database_settings: DatabaseSettings, tmp_path_factory: pytest.TempPathFactory, redis_url: str
) -> AsyncIterator[TenantApi]:
    async with tenant_api(database_settings, Path(tmp_path_factory.mktemp("dev-auth")), redis_url) as running:
        yield running


@pytest.fixture(scope="module")
def admin_url(database_settings: DatabaseSettings) -> str:
    url = endpoints(database_settings).admin_url
    if not url:
        pytest.skip("needs the owner's URL (VOICEAI_DATABASE_ADMIN_URL) to read raw rows")
    return url


async def owner_rows(admin_url: str, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Rows read as the owner (RLS forced, so the tenant is set as in a raw dump per tenant)."""
    async with await psycopg.AsyncConnection.connect(admin_url, autocommit=True) as conn:
        cur = await conn.execute(query.encode(), params)
        return await cur.fetchall() if cur.description else []


async def owner_dump(admin_url: str, tenant: str) -> str:
    """Every column of every row of the tenant's tables, as text: what a SQL dump would show."""
    parts: list[str] = []
    async with await psycopg.AsyncConnection.connect(admin_url) as conn:
        await conn.execute(b"SELECT set_config('voiceai.tenant_id', %s, false)", (tenant,))
        for table in ("calls", "provider_keys", "tenant_data_keys", "audit_log", "agents"):
            cur = await conn.execute(f"SELECT t::text, row_to_json(t)::text FROM {table} t".encode())
            parts.extend(" ".join(r) for r in await cur.fetchall())
    assert parts, "the dump read nothing: the tenant setting did not apply"
    return "\n".join(parts)


async def record_call(api: TenantApi, tenant: str, call_id: str, agent: str = "") -> pb.Call:
    call = pb.Call(status=pb.CALL_STATUS_COMPLETED, agent=f"tenants/{tenant}/agents/{agent}" if agent else "")
    call.end_time.GetCurrentTime()
    call.turns.add(caller_text=SECRET_TEXT, agent_text="Noted, mail jane@example.com")
    return await api.stub.CreateCall(
        svc.CreateCallRequest(parent=f"tenants/{tenant}", call=call, call_id=call_id),
        metadata=api.md(tenant, "agent"),
    )


async def get_call(api: TenantApi, tenant: str, call_id: str) -> pb.Call:
    return await api.stub.GetCall(
        svc.GetCallRequest(name=f"tenants/{tenant}/calls/{call_id}"), metadata=api.md(tenant, "viewer")
    )


async def status_of(call: Any) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value.code(), caught.value.details() or ""


async def test_a_raw_dump_of_a_finished_call_shows_no_transcript(api: TenantApi, admin_url: str) -> None:
    t = await api.new_tenant()
    await record_call(api, t, "c1")
    got = await get_call(api, t, "c1")
    assert got.turns[0].caller_text == SECRET_TEXT  # the API still reads it
    dump = await owner_dump(admin_url, t)
    assert "c1" in dump  # the dump did read the call
    # The card as the caller said it: "4111" alone also turns up by chance in ids and timestamps.
    for word in ("Zebra", "4111 1111", "jane@example.com", "Noted"):
        assert word not in dump


async def test_an_agent_with_redaction_stores_redacted_transcripts(api: TenantApi) -> None:
    t = await api.new_tenant()
    await api.stub.CreateAgent(
        svc.CreateAgentRequest(
            parent=f"tenants/{t}",
            agent=pb.Agent(system_prompt="Be brief.", redact_pii=True),
            agent_id="careful",
        ),
        metadata=api.md(t, "admin"),
    )
    await record_call(api, t, "c1", agent="careful")
    turn = (await get_call(api, t, "c1")).turns[0]
    assert turn.caller_text == "my card is [CARD] and I live on Zebra Street"
    assert turn.agent_text == "Noted, mail [EMAIL]"


async def test_a_corrupted_transcript_is_data_loss_for_that_record_only(
    api: TenantApi, admin_url: str
) -> None:
    t = await api.new_tenant()
    await record_call(api, t, "bad")
    await record_call(api, t, "good")
    await owner_rows(
        admin_url,
        "UPDATE calls SET turns_sealed = overlay(turns_sealed placing '\\x00'::bytea from 30 for 1)"
        " WHERE tenant_id = %s AND id = 'bad'",
        (t,),
    )
    code, details = await status_of(get_call(api, t, "bad"))
    assert code == grpc.StatusCode.DATA_LOSS and "turns" in details and "Zebra" not in details
    assert (await get_call(api, t, "good")).turns[0].caller_text == SECRET_TEXT
    listed = await api.stub.ListCalls(
        svc.ListCallsRequest(parent=f"tenants/{t}"), metadata=api.md(t, "viewer")
    )
    assert sorted(c.name.rsplit("/", 1)[1] for c in listed.calls) == ["bad", "good"]


async def test_crypto_shredding_makes_one_tenants_records_unreadable_at_once(api: TenantApi) -> None:
    a, b = await api.new_tenant(), await api.new_tenant()
    await record_call(api, a, "c1")
    await record_call(api, b, "c1")
    assert (await get_call(api, a, "c1")).turns  # tenant_svc has A's key unwrapped in its cache
    dps = dp_grpc.DataProtectionServiceStub(api.channel)
    code, _ = await status_of(
        dps.ShredDataKeys(dp.ShredDataKeysRequest(name=f"tenants/{a}"), metadata=api.md(a, "admin"))
    )
    assert code == grpc.StatusCode.PERMISSION_DENIED  # irreversible: platform operators only
    shred = await dps.ShredDataKeys(
        dp.ShredDataKeysRequest(name=f"tenants/{a}"), metadata=api.md(None, "platform", header_tenant=a)
    )
    assert shred.destroyed_keys == 1
    code, details = await status_of(get_call(api, a, "c1"))
    assert code == grpc.StatusCode.DATA_LOSS and "shredded" in details
    assert (await get_call(api, b, "c1")).turns[0].caller_text == SECRET_TEXT
    # The tenant goes on with a new key; what was shredded stays shredded.
    await record_call(api, a, "c2")
    assert (await get_call(api, a, "c2")).turns[0].caller_text == SECRET_TEXT
    code, details = await status_of(get_call(api, a, "c1"))
    assert code == grpc.StatusCode.DATA_LOSS and "shredded" in details


async def test_data_key_rotation_re_encrypts_old_records_as_they_are_read(
    api: TenantApi, admin_url: str
) -> None:
    t = await api.new_tenant()
    await record_call(api, t, "old")
    dps = dp_grpc.DataProtectionServiceStub(api.channel)
    rotated = await dps.RotateDataKey(
        dp.RotateDataKeyRequest(name=f"tenants/{t}"), metadata=api.md(t, "admin")
    )
    assert rotated.version == 2
    await record_call(api, t, "new")

    async def version(call_id: str) -> int:
        rows = await owner_rows(
            admin_url, "SELECT turns_sealed FROM calls WHERE tenant_id = %s AND id = %s", (t, call_id)
        )
        return key_version(bytes(rows[0][0]))

    assert (await version("old"), await version("new")) == (1, 2)
    assert (await get_call(api, t, "old")).turns[0].caller_text == SECRET_TEXT
    assert await version("old") == 2  # re-sealed with the newest key on read
    code, _ = await status_of(
        dps.RotateDataKey(dp.RotateDataKeyRequest(name=f"tenants/{t}"), metadata=api.md(t, "viewer"))
    )
    assert code == grpc.StatusCode.PERMISSION_DENIED


def internal_md(api: TenantApi, tenant: str, service: str = "llm") -> tuple[tuple[str, str], ...]:
    """The internal token the gateway minted for ``service`` in a call of ``tenant`` (a speech
    service forwards it to tenant_svc's ProviderKeyInternalService; "tenant" is the gateway's
    own audience for its internal services)."""
    issuer = InternalTokenIssuer(dev_signing_key(api.key_dir, DEV_INTERNAL_KEY_NAME))
    token = issuer.mint(Principal("gateway-call", tenant, frozenset({"agent"}), "jwt"), service)
    return (("authorization", f"Bearer {token}"), ("x-tenant-id", tenant))


async def test_byok_keys_are_sealed_never_returned_audited_and_internal_only(
    api: TenantApi, admin_url: str
) -> None:
    a, b = await api.new_tenant(), await api.new_tenant()
    dps = dp_grpc.DataProtectionServiceStub(api.channel)
    internal = pki_grpc.ProviderKeyInternalServiceStub(api.channel)
    stored = await dps.CreateProviderKey(
        dp.CreateProviderKeyRequest(
            parent=f"tenants/{a}",
            provider_key_id="openai",
            provider_key=dp.ProviderKey(api_key=OPENAI_KEY, base_url="https://a.openai.azure.com/v1"),
        ),
        metadata=api.md(a, "admin"),
    )
    assert stored.name == f"tenants/{a}/providerKeys/openai" and stored.last4 == "WXYZ" and not stored.api_key
    assert len(stored.fingerprint) == 12 and stored.fingerprint not in OPENAI_KEY
    listed = await dps.ListProviderKeys(
        dp.ListProviderKeysRequest(parent=f"tenants/{a}"), metadata=api.md(a, "admin")
    )
    assert [k.last4 for k in listed.provider_keys] == ["WXYZ"] and OPENAI_KEY not in str(listed)
    # Only admins; never another tenant; never a user credential on the internal path.
    for md in (api.md(a, "viewer"), api.md(a, "agent"), api.md(b, "admin", header_tenant=a)):
        code, _ = await status_of(
            dps.ListProviderKeys(dp.ListProviderKeysRequest(parent=f"tenants/{a}"), metadata=md)
        )
        assert code == grpc.StatusCode.PERMISSION_DENIED
    code, details = await status_of(
        internal.ResolveProviderKey(
            pki.ResolveProviderKeyRequest(provider="openai"), metadata=api.md(a, "admin")
        )
    )
    assert code == grpc.StatusCode.PERMISSION_DENIED and "internal" in details
    # The mesh's internal path: A's key for A, nothing for B.
    got = await internal.ResolveProviderKey(
        pki.ResolveProviderKeyRequest(provider="openai"), metadata=internal_md(api, a)
    )
    assert (got.found, got.api_key, got.base_url) == (True, OPENAI_KEY, "https://a.openai.azure.com/v1")
    other = await internal.ResolveProviderKey(
        pki.ResolveProviderKeyRequest(provider="openai"), metadata=internal_md(api, b)
    )
    assert not other.found and not other.api_key
    # At rest: sealed; audited by name, never by value.
    dump = await owner_dump(admin_url, a)
    assert OPENAI_KEY not in dump and OPENAI_KEY[3:20] not in dump and "CreateProviderKey" in dump
    # A data-key rotation: the key still resolves, and is re-sealed with the new data key.
    await dps.RotateDataKey(dp.RotateDataKeyRequest(name=f"tenants/{a}"), metadata=api.md(a, "admin"))
    for _ in range(2):
        got = await internal.ResolveProviderKey(
            pki.ResolveProviderKeyRequest(provider="openai"), metadata=internal_md(api, a)
        )
        assert got.api_key == OPENAI_KEY
    (sealed,) = await owner_rows(admin_url, "SELECT key_sealed FROM provider_keys WHERE tenant_id = %s", (a,))
    assert key_version(bytes(sealed[0])) == 2
    await dps.DeleteProviderKey(
        dp.DeleteProviderKeyRequest(name=f"tenants/{a}/providerKeys/openai"), metadata=api.md(a, "admin")
    )
    gone = await internal.ResolveProviderKey(
        pki.ResolveProviderKeyRequest(provider="openai"), metadata=internal_md(api, a)
    )
    assert not gone.found


@pytest.mark.parametrize(
    ("provider", "key", "url", "field"),
    [
        ("gemini", "k", "", "provider_key_id"),
        ("openai", "", "", "api_key"),
        ("openai", "k", "http://plain.example", "base_url"),
        ("openai", "k", "https://user:pw@x.example", "base_url"),
    ],
)
async def test_bad_provider_keys_are_invalid_argument_naming_the_field(
    api: TenantApi, provider: str, key: str, url: str, field: str
) -> None:
    t = await api.new_tenant()
    dps = dp_grpc.DataProtectionServiceStub(api.channel)
    code, details = await status_of(
        dps.CreateProviderKey(
            dp.CreateProviderKeyRequest(
                parent=f"tenants/{t}",
                provider_key_id=provider,
                provider_key=dp.ProviderKey(api_key=key, base_url=url),
            ),
            metadata=api.md(t, "admin"),
        )
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT and field in details


async def test_retention_policy_round_trips_is_validated_and_metadata_only_stores_no_transcript(
    api: TenantApi,
) -> None:
    t = await api.new_tenant()
    dps = dp_grpc.DataProtectionServiceStub(api.channel)
    name = f"tenants/{t}/retentionPolicy"
    assert (
        await dps.GetRetentionPolicy(dp.GetRetentionPolicyRequest(name=name), metadata=api.md(t, "admin"))
    ).call_record_days == 0
    updated = await dps.UpdateRetentionPolicy(
        dp.UpdateRetentionPolicyRequest(
            retention_policy=dp.RetentionPolicy(name=name, call_record_days=30, metadata_only=True),
            update_mask=field_mask_pb2.FieldMask(paths=["call_record_days", "metadata_only"]),
        ),
        metadata=api.md(t, "admin"),
    )
    assert (updated.call_record_days, updated.transcript_days, updated.metadata_only) == (30, 0, True)
    code, details = await status_of(
        dps.UpdateRetentionPolicy(
            dp.UpdateRetentionPolicyRequest(
                retention_policy=dp.RetentionPolicy(name=name, transcript_days=-1),
                update_mask=field_mask_pb2.FieldMask(paths=["transcript_days"]),
            ),
            metadata=api.md(t, "admin"),
        )
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "transcript_days" in details
    await record_call(api, t, "c1")
    assert not (await get_call(api, t, "c1")).turns
    audit = await api.stub.ListAuditLogEntries(
        svc.ListAuditLogEntriesRequest(parent=f"tenants/{t}"), metadata=api.md(t, "admin")
    )
    assert "UpdateRetentionPolicy" in [e.action for e in audit.audit_log_entries]
    assert json.dumps([list(e.changed_fields) for e in audit.audit_log_entries]).count("metadata_only") == 1


async def test_kek_rotation_rewraps_every_tenants_data_keys_and_records_still_open(
    api: TenantApi, pg_pool: AsyncConnectionPool, tmp_path: Path
) -> None:
    import shutil

    from common.crypto import create_key_ring
    from tenant_svc.rekey import rewrap_all

    t = await api.new_tenant()
    await record_call(api, t, "c1")
    ring = tmp_path / "kek.json"
    shutil.copy(KekSettings().kek_file or "", ring)  # the session's ring, then a new KEK in a copy
    old_kek = (await build_key_provider(KekSettings(kek_file=ring))).current_kek_id
    new_kek = create_key_ring(ring, rotate=True)
    protection = DataProtection(TenantKeyring(await build_key_provider(KekSettings(kek_file=ring))))
    repo = Repository(pg_pool, protection)
    # Only this test's tenant: the session's other tenant_svc hosts keep the session's ring.
    assert await rewrap_all(repo, protection, only={t}) == (1, 1)
    assert await rewrap_all(repo, protection, only={t}) == (1, 0)  # idempotent
    async with repo.tenant(t) as scope:
        (row,) = await scope.rows("SELECT kek_id FROM tenant_data_keys")
        assert row["kek_id"] == new_kek != old_kek
        assert (await scope.get_call("c1")).turns[0].caller_text == SECRET_TEXT


async def test_tenant_svc_refuses_to_start_without_a_kek(database_settings: DatabaseSettings) -> None:
    from common.crypto import MissingKek
    from tenant_svc.app import Settings, build_host

    with pytest.raises(MissingKek, match="VOICEAI_KEK_FILE"):
        await build_host(Settings(port=0), database_settings, kek_settings=KekSettings(kek_file=None))


async def test_transcripts_stored_in_clear_before_0002_are_sealed_by_rekey(
    api: TenantApi, pg_pool: AsyncConnectionPool, admin_url: str
) -> None:
    from tenant_svc.rekey import seal_plaintext

    t = await api.new_tenant()
    legacy = Repository(pg_pool)  # no protection: what tenant_svc wrote before 0002
    call = pb.Call(status=pb.CALL_STATUS_COMPLETED)
    call.turns.add(caller_text=SECRET_TEXT)
    for i in range(3):
        async with legacy.tenant(t) as scope:
            await scope.insert_call(f"old{i}", "", call)
    assert "Zebra" in await owner_dump(admin_url, t)
    protection = DataProtection(TenantKeyring(await build_key_provider(KekSettings())))
    assert await seal_plaintext(Repository(pg_pool, protection), protection, only={t}, batch=2) == 3
    assert "Zebra" not in await owner_dump(admin_url, t)
    assert (await get_call(api, t, "old2")).turns[0].caller_text == SECRET_TEXT


def _paths(victim: str) -> dict[str, object]:
    base = f"tenants/{victim}"
    return {
        "CreateProviderKey": dp.CreateProviderKeyRequest(
            parent=base, provider_key_id="openai", provider_key=dp.ProviderKey(api_key="sk-attacker")
        ),
        "ListProviderKeys": dp.ListProviderKeysRequest(parent=base),
        "DeleteProviderKey": dp.DeleteProviderKeyRequest(name=f"{base}/providerKeys/openai"),
        "GetRetentionPolicy": dp.GetRetentionPolicyRequest(name=f"{base}/retentionPolicy"),
        "UpdateRetentionPolicy": dp.UpdateRetentionPolicyRequest(
            retention_policy=dp.RetentionPolicy(name=f"{base}/retentionPolicy", call_record_days=1),
            update_mask=field_mask_pb2.FieldMask(paths=["call_record_days"]),
        ),
        "RotateDataKey": dp.RotateDataKeyRequest(name=base),
        "ShredDataKeys": dp.ShredDataKeysRequest(name=base),
    }


@pytest.mark.parametrize("method", sorted(_paths("x")))
@pytest.mark.parametrize("how", ["own-header", "victim-header"])
async def test_no_data_protection_path_reaches_another_tenant(api: TenantApi, method: str, how: str) -> None:
    attacker, victim = await api.new_tenant(), await api.new_tenant()
    dps = dp_grpc.DataProtectionServiceStub(api.channel)
    await dps.CreateProviderKey(
        dp.CreateProviderKeyRequest(
            parent=f"tenants/{victim}",
            provider_key_id="openai",
            provider_key=dp.ProviderKey(api_key=OPENAI_KEY),
        ),
        metadata=api.md(victim, "admin"),
    )
    md = api.md(attacker, "admin", header_tenant=victim if how == "victim-header" else None)
    code, details = await status_of(getattr(dps, method)(_paths(victim)[method], metadata=md))
    assert code == grpc.StatusCode.PERMISSION_DENIED and victim not in details
    got = await pki_grpc.ProviderKeyInternalServiceStub(api.channel).ResolveProviderKey(
        pki.ResolveProviderKeyRequest(provider="openai"), metadata=internal_md(api, victim)
    )
    assert got.api_key == OPENAI_KEY  # untouched
