"""Tenant data protection in tenant_svc: sealed transcripts (PII-redacted when the agent asks),
tenants' own provider keys (sealed), retention policies and data-key rotation.

SQL runs through ``TenantScope.rows`` inside the caller's tenant-bound transaction, so row-level
security confines every statement here as it does in ``repository``. Secrets and transcript
text never reach a log line: errors name fields, not values.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from common.crypto import TenantKeyring, WrappedDataKey
from common.crypto.keyring import SHREDDED
from common.errors import NotFound
from common.pii import redact

if TYPE_CHECKING:
    from tenant_svc.repository import TenantScope

PROVIDERS = ("deepgram", "openai", "elevenlabs")
TURN_TEXT_FIELDS = ("caller_text", "agent_text")


class ScopeDataKeys:
    """The tenant's wrapped data keys in ``tenant_data_keys``, read in the scope's transaction."""

    def __init__(self, scope: TenantScope) -> None:
        self._scope = scope

    async def data_keys(self) -> Sequence[WrappedDataKey]:
        """Every live version of the tenant's data key."""
        rows = await self._scope.rows("SELECT version, wrapped, kek_id FROM tenant_data_keys")
        return [WrappedDataKey(r["version"], bytes(r["wrapped"]), r["kek_id"]) for r in rows]

    async def add_data_key(self, key: WrappedDataKey) -> bool:
        """Store a new version unless a concurrent writer already stored it."""
        rows = await self._scope.rows(
            "INSERT INTO tenant_data_keys (tenant_id, version, wrapped, kek_id) VALUES (%s, %s, %s, %s)"
            " ON CONFLICT DO NOTHING RETURNING version",
            (self._scope.tenant_id, key.version, key.wrapped, key.kek_id),
        )
        return bool(rows)


@dataclass(frozen=True, slots=True)
class Retention:
    """A tenant's retention policy (0 days = keep)."""

    call_record_days: int = 0
    transcript_days: int = 0
    metadata_only: bool = False


def redact_turns(turns: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Turns with PII redacted from their caller and agent texts."""
    out = []
    for stored in turns:
        turn = dict(stored)
        for name in TURN_TEXT_FIELDS:
            if isinstance(turn.get(name), str):
                turn[name] = redact(turn[name])
        out.append(turn)
    return out


def fingerprint(secret: str) -> str:
    """First 12 hex digits of SHA-256: tells keys apart, reveals nothing."""
    return hashlib.sha256(secret.encode()).hexdigest()[:12]


async def load_retention(scope: TenantScope) -> Retention:
    """The tenant's retention policy (keep everything when it has none)."""
    rows = await scope.rows("SELECT call_record_days, transcript_days, metadata_only FROM retention_policies")
    return Retention(**rows[0]) if rows else Retention()


class DataProtection:
    """Seals and opens a tenant's protected fields with its data keys (``TenantKeyring``)."""

    def __init__(self, keyring: TenantKeyring) -> None:
        self.keyring = keyring

    # -- call transcripts -----------------------------------------------------------------
    async def seal_turns(
        self, scope: TenantScope, call_id: str, agent_id: str, turns: list[dict[str, Any]]
    ) -> tuple[list[dict[str, Any]], bytes | None]:
        """The turns as stored (redacted if the agent asks; none under a metadata-only policy)
        and their sealed form for ``calls.turns_sealed``."""
        if (await self.retention(scope)).metadata_only:
            return [], None
        if agent_id and await self._agent_redacts(scope, agent_id):
            turns = redact_turns(turns)
        if not turns:
            return [], None
        sealed = await self.keyring.seal(
            ScopeDataKeys(scope), scope.tenant_id, call_id, "turns", json.dumps(turns).encode()
        )
        return turns, sealed

    async def open_turns(self, scope: TenantScope, row: dict[str, Any]) -> list[dict[str, Any]]:
        """The call's turns; a value sealed with an older data key is re-sealed with the newest
        (lazy re-encryption). DataLoss when they cannot be decrypted."""
        sealed = row.get("turns_sealed")
        if sealed is None:
            return list(row["turns"])
        store = ScopeDataKeys(scope)
        plain, stale = await self.keyring.open(store, scope.tenant_id, row["id"], "turns", bytes(sealed))
        if stale:
            resealed = await self.keyring.seal(store, scope.tenant_id, row["id"], "turns", plain)
            await scope.rows("UPDATE calls SET turns_sealed = %s WHERE id = %s", (resealed, row["id"]))
        turns: list[dict[str, Any]] = json.loads(plain)
        return turns

    async def _agent_redacts(self, scope: TenantScope, agent_id: str) -> bool:
        rows = await scope.rows("SELECT redact_pii FROM agents WHERE id = %s", (agent_id,))
        return bool(rows and rows[0]["redact_pii"])

    async def history_keys(self, scope: TenantScope) -> list[tuple[int, bytes]]:
        """The keys sealing the tenant's conversation history in Redis, newest first."""
        return await self.keyring.derived_keys(scope.tenant_id, ScopeDataKeys(scope), "history")

    async def seal_plaintext(self, scope: TenantScope, limit: int) -> int:
        """Seal up to ``limit`` transcripts stored in clear (rows older than migration 0002);
        returns how many. Redaction is not applied retroactively."""
        rows = await scope.rows(
            "SELECT id, turns FROM calls WHERE turns_sealed IS NULL AND turns <> '[]'::jsonb"
            " LIMIT %s FOR UPDATE SKIP LOCKED",
            (limit,),
        )
        store = ScopeDataKeys(scope)
        for row in rows:
            data = json.dumps(row["turns"]).encode()
            sealed = await self.keyring.seal(store, scope.tenant_id, row["id"], "turns", data)
            await scope.rows(
                "UPDATE calls SET turns = '[]', turns_sealed = %s WHERE id = %s", (sealed, row["id"])
            )
        return len(rows)

    async def rotate_data_key(self, scope: TenantScope) -> int:
        """A new data-key version for the tenant; older values re-seal as they are read."""
        return await self.keyring.rotate(scope.tenant_id, ScopeDataKeys(scope))

    async def rewrap_data_keys(self, scope: TenantScope) -> int:
        """Rewrap the tenant's data keys under the current KEK; returns how many changed."""
        changed = 0
        current = self.keyring.provider.current_kek_id
        for key in await ScopeDataKeys(scope).data_keys():
            if key.kek_id == current or key.shredded:
                continue
            new = await self.keyring.rewrap(scope.tenant_id, key)
            await scope.rows(
                "UPDATE tenant_data_keys SET wrapped = %s, kek_id = %s WHERE version = %s",
                (new.wrapped, new.kek_id, key.version),
            )
            changed += 1
        return changed

    async def shred(self, scope: TenantScope) -> int:
        """Crypto-shredding: destroy the tenant's data keys (tombstones keep their version
        numbers); everything sealed with them is unreadable from this commit on, on every
        replica. Returns how many keys went."""
        rows = await scope.rows(
            "UPDATE tenant_data_keys SET wrapped = ''::bytea, kek_id = %s WHERE kek_id <> %s RETURNING version",
            (SHREDDED, SHREDDED),
        )  # tombstones: the key material is gone, the version numbers are never reused
        await scope.rows("DELETE FROM provider_keys")
        self.keyring.forget(scope.tenant_id)
        return len(rows)

    # -- provider keys (BYOK) -------------------------------------------------------------
    async def put_provider_key(
        self, scope: TenantScope, provider: str, api_key: str, base_url: str
    ) -> dict[str, Any]:
        """Store (or replace) the tenant's key for ``provider``; returns the public row."""
        sealed = await self.keyring.seal(
            ScopeDataKeys(scope), scope.tenant_id, f"provider_key/{provider}", "api_key", api_key.encode()
        )
        rows = await scope.rows(
            "INSERT INTO provider_keys (tenant_id, provider, key_sealed, base_url, fingerprint, last4)"
            " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (tenant_id, provider) DO UPDATE SET"
            " key_sealed = excluded.key_sealed, base_url = excluded.base_url,"
            " fingerprint = excluded.fingerprint, last4 = excluded.last4, update_time = now()"
            " RETURNING provider, base_url, fingerprint, last4, update_time",
            (scope.tenant_id, provider, sealed, base_url, fingerprint(api_key), api_key[-4:]),
        )
        return rows[0]

    async def list_provider_keys(self, scope: TenantScope) -> list[dict[str, Any]]:
        """Public rows (no key material), by provider."""
        return await scope.rows(
            "SELECT provider, base_url, fingerprint, last4, update_time FROM provider_keys ORDER BY provider"
        )

    async def delete_provider_key(self, scope: TenantScope, provider: str) -> None:
        """Forget the tenant's key for ``provider``."""
        rows = await scope.rows(
            "DELETE FROM provider_keys WHERE provider = %s RETURNING provider", (provider,)
        )
        if not rows:
            raise NotFound("provider key not found")

    async def provider_key(self, scope: TenantScope, provider: str) -> tuple[str, str] | None:
        """The tenant's (key, base URL) for ``provider``, decrypted, or None."""
        rows = await scope.rows(
            "SELECT key_sealed, base_url FROM provider_keys WHERE provider = %s", (provider,)
        )
        if not rows:
            return None
        store, record = ScopeDataKeys(scope), f"provider_key/{provider}"
        plain, stale = await self.keyring.open(
            store, scope.tenant_id, record, "api_key", bytes(rows[0]["key_sealed"])
        )
        if stale:  # sealed with an older data key: re-seal with the newest (lazy re-encryption)
            resealed = await self.keyring.seal(store, scope.tenant_id, record, "api_key", plain)
            await scope.rows(
                "UPDATE provider_keys SET key_sealed = %s WHERE provider = %s", (resealed, provider)
            )
        return plain.decode(), rows[0]["base_url"]

    # -- retention ------------------------------------------------------------------------
    async def retention(self, scope: TenantScope) -> Retention:
        """The tenant's policy (keep everything when it has none)."""
        return await load_retention(scope)

    async def set_retention(self, scope: TenantScope, policy: Retention) -> dict[str, Any]:
        """Store the tenant's policy; returns the row with its update time."""
        rows = await scope.rows(
            "INSERT INTO retention_policies (tenant_id, call_record_days, transcript_days, metadata_only)"
            " VALUES (%s, %s, %s, %s) ON CONFLICT (tenant_id) DO UPDATE SET"
            " call_record_days = excluded.call_record_days, transcript_days = excluded.transcript_days,"
            " metadata_only = excluded.metadata_only, update_time = now() RETURNING *",
            (scope.tenant_id, policy.call_record_days, policy.transcript_days, policy.metadata_only),
        )
        return rows[0]


__all__ = [
    "PROVIDERS",
    "DataProtection",
    "Retention",
    "ScopeDataKeys",
    "fingerprint",
    "load_retention",
    "redact_turns",
]
