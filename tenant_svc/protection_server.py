"""The DataProtectionService servicer (BYOK keys, retention policy, data-key rotation; tenant
admins, audited) and ProviderKeyInternalService (a tenant's provider key for its own streams;
internal credentials only)."""

from __future__ import annotations

from typing import Any, TypeAlias
from urllib.parse import urlsplit

import grpc.aio
from google.protobuf import empty_pb2

from common import context
from common.errors import InvalidArgument, PermissionDenied
from common.gen.voiceai.tenant.v1 import data_key_internal_service_pb2 as dki
from common.gen.voiceai.tenant.v1 import data_key_internal_service_pb2_grpc as dki_grpc
from common.gen.voiceai.tenant.v1 import data_protection_service_pb2 as dp
from common.gen.voiceai.tenant.v1 import data_protection_service_pb2_grpc as dp_grpc
from common.gen.voiceai.tenant.v1 import provider_key_internal_service_pb2 as pki
from common.gen.voiceai.tenant.v1 import provider_key_internal_service_pb2_grpc as pki_grpc
from tenant_svc import validation as v
from tenant_svc.changes import ChangeListener
from tenant_svc.credentials import actor
from tenant_svc.protection import PROVIDERS, DataProtection, Retention
from tenant_svc.ratelimit import TenantRateLimit, rate_limited
from tenant_svc.repository import Repository
from tenant_svc.server import _scope

Ctx: TypeAlias = grpc.aio.ServicerContext
RETENTION_FIELDS = ("call_record_days", "transcript_days", "metadata_only")
MAX_DAYS = 36_500
MAX_KEY_CHARS = 512


def _provider(value: str, field: str) -> str:
    if value not in PROVIDERS:
        raise InvalidArgument(f"{field} must be one of {', '.join(PROVIDERS)}, got {value[:40]!r}")
    return value


def _base_url(value: str) -> str:
    if not value:
        return ""
    parts = urlsplit(value)
    if parts.scheme != "https" or not parts.hostname or parts.username or parts.password:
        raise InvalidArgument("provider_key.base_url must be an https URL without credentials in it")
    return value[:500]


def _public(tenant: str, row: dict[str, Any]) -> dp.ProviderKey:
    key = dp.ProviderKey(
        name=f"tenants/{tenant}/providerKeys/{row['provider']}",
        base_url=row["base_url"],
        fingerprint=row["fingerprint"],
        last4=row["last4"],
    )
    key.update_time.FromDatetime(row["update_time"])
    return key


def _policy(tenant: str, row: dict[str, Any] | None, policy: Retention) -> dp.RetentionPolicy:
    out = dp.RetentionPolicy(
        name=f"tenants/{tenant}/retentionPolicy",
        call_record_days=policy.call_record_days,
        transcript_days=policy.transcript_days,
        metadata_only=policy.metadata_only,
    )
    if row is not None:
        out.update_time.FromDatetime(row["update_time"])
    return out


class DataProtectionServicer(dp_grpc.DataProtectionServiceServicer):
    """Tenant admins manage their provider keys, retention and data key here."""

    def __init__(
        self,
        repo: Repository,
        protection: DataProtection,
        on_change: ChangeListener | None = None,
        rate: TenantRateLimit | None = None,
    ) -> None:
        self._repo = repo
        self._protection = protection
        self._on_change = on_change
        self._rate = rate

    async def _changed(self, tenant: str, provider: str) -> None:
        if self._on_change is not None:
            result = self._on_change("provider_key", tenant, provider)
            if result is not None:
                await result

    @rate_limited
    async def CreateProviderKey(self, request: dp.CreateProviderKeyRequest, _: Ctx) -> dp.ProviderKey:
        """Store the tenant's key for a provider (replacing any earlier one)."""
        tenant = _scope(v.tenant_of(request.parent, "parent"))
        provider = _provider(request.provider_key_id, "provider_key_id")
        api_key = request.provider_key.api_key.strip()
        if not api_key or len(api_key) > MAX_KEY_CHARS or not api_key.isprintable():
            raise InvalidArgument(f"provider_key.api_key is required: 1-{MAX_KEY_CHARS} printable characters")
        base_url = _base_url(request.provider_key.base_url)
        async with self._repo.tenant(tenant) as t:
            row = await self._protection.put_provider_key(t, provider, api_key, base_url)
            name = f"tenants/{tenant}/providerKeys/{provider}"
            await t.audit(actor(), "CreateProviderKey", name, ["api_key", "base_url"])
        await self._changed(tenant, provider)
        return _public(tenant, row)

    @rate_limited
    async def ListProviderKeys(
        self, request: dp.ListProviderKeysRequest, _: Ctx
    ) -> dp.ListProviderKeysResponse:
        """The tenant's keys: fingerprints and last four characters only."""
        tenant = _scope(v.tenant_of(request.parent, "parent"))
        async with self._repo.tenant(tenant) as t:
            rows = await self._protection.list_provider_keys(t)
        return dp.ListProviderKeysResponse(provider_keys=[_public(tenant, r) for r in rows])

    @rate_limited
    async def DeleteProviderKey(self, request: dp.DeleteProviderKeyRequest, _: Ctx) -> empty_pb2.Empty:
        """Forget a provider key; the tenant's streams fall back to the platform's key."""
        tenant, provider = v.child_id(request.name, "providerKeys")
        _scope(tenant)
        _provider(provider, "name")
        async with self._repo.tenant(tenant) as t:
            await self._protection.delete_provider_key(t, provider)
            await t.audit(actor(), "DeleteProviderKey", request.name)
        await self._changed(tenant, provider)
        return empty_pb2.Empty()

    @rate_limited
    async def GetRetentionPolicy(self, request: dp.GetRetentionPolicyRequest, _: Ctx) -> dp.RetentionPolicy:
        """The tenant's retention policy (all zeros: keep everything)."""
        tenant = _scope(v.tenant_of(request.name))
        async with self._repo.tenant(tenant) as t:
            policy = await self._protection.retention(t)
        return _policy(tenant, None, policy)

    @rate_limited
    async def UpdateRetentionPolicy(
        self, request: dp.UpdateRetentionPolicyRequest, _: Ctx
    ) -> dp.RetentionPolicy:
        """Change the policy; the purge job applies it on its next run."""
        tenant = _scope(v.tenant_of(request.retention_policy.name, "retention_policy.name"))
        async with self._repo.tenant(tenant) as t:
            current = await self._protection.retention(t)
            stored = dp.RetentionPolicy(
                call_record_days=current.call_record_days,
                transcript_days=current.transcript_days,
                metadata_only=current.metadata_only,
            )
            merged: Any = v.apply_mask(
                stored, request.retention_policy, request.update_mask, RETENTION_FIELDS
            )
            for field in ("call_record_days", "transcript_days"):
                if not 0 <= getattr(merged, field) <= MAX_DAYS:
                    raise InvalidArgument(f"retention_policy.{field} must be 0 (keep) to {MAX_DAYS} days")
            policy = Retention(merged.call_record_days, merged.transcript_days, merged.metadata_only)
            row = await self._protection.set_retention(t, policy)
            await t.audit(
                actor(),
                "UpdateRetentionPolicy",
                f"tenants/{tenant}/retentionPolicy",
                request.update_mask.paths,
            )
        return _policy(tenant, row, policy)

    @rate_limited
    async def RotateDataKey(self, request: dp.RotateDataKeyRequest, _: Ctx) -> dp.RotateDataKeyResponse:
        """A new data-key version; older data is re-encrypted as it is read."""
        tenant = _scope(v.tenant_of(request.name))
        async with self._repo.tenant(tenant) as t:
            version = await self._protection.rotate_data_key(t)
            await t.audit(actor(), "RotateDataKey", f"tenants/{tenant}")
        return dp.RotateDataKeyResponse(version=version)

    @rate_limited
    async def ShredDataKeys(self, request: dp.ShredDataKeysRequest, _: Ctx) -> dp.ShredDataKeysResponse:
        """Crypto-shredding of one tenant (platform operators; audited in the tenant's log)."""
        tenant = _scope(v.tenant_of(request.name))
        async with self._repo.tenant(tenant) as t:
            destroyed = await self._protection.shred(t)
            await t.audit(actor(), "ShredDataKeys", f"tenants/{tenant}")
        for provider in PROVIDERS:
            await self._changed(tenant, provider)
        return dp.ShredDataKeysResponse(destroyed_keys=destroyed)


def _internal_only(method: str) -> None:
    principal = context.principal()
    if principal is None or principal.kind != "internal":
        raise PermissionDenied(f"{method} accepts internal credentials only")


class DataKeyInternalServicer(dki_grpc.DataKeyInternalServiceServicer):
    """Hands the gateway the keys that seal a tenant's conversation history in Redis."""

    def __init__(self, repo: Repository, protection: DataProtection) -> None:
        self._repo = repo
        self._protection = protection

    async def GetHistoryKeys(self, request: dki.GetHistoryKeysRequest, _: Ctx) -> dki.GetHistoryKeysResponse:
        """The bound tenant's history keys, newest first."""
        _internal_only("GetHistoryKeys")
        async with self._repo.tenant(context.tenant_id()) as t:
            keys = await self._protection.history_keys(t)
        return dki.GetHistoryKeysResponse(keys=[dki.HistoryKey(version=v, key=k) for v, k in keys])


class ProviderKeyInternalServicer(pki_grpc.ProviderKeyInternalServiceServicer):
    """Hands a tenant's provider key to the mesh's services, for that tenant's streams only."""

    def __init__(self, repo: Repository, protection: DataProtection) -> None:
        self._repo = repo
        self._protection = protection

    async def ResolveProviderKey(
        self, request: pki.ResolveProviderKeyRequest, _: Ctx
    ) -> pki.ResolveProviderKeyResponse:
        """The bound tenant's key for ``provider``, if it stored one."""
        _internal_only("ResolveProviderKey")
        provider = _provider(request.provider, "provider")
        async with self._repo.tenant(context.tenant_id()) as t:
            found = await self._protection.provider_key(t, provider)
        if found is None:
            return pki.ResolveProviderKeyResponse(found=False)
        return pki.ResolveProviderKeyResponse(found=True, api_key=found[0], base_url=found[1])


__all__ = ["DataKeyInternalServicer", "DataProtectionServicer", "ProviderKeyInternalServicer"]
