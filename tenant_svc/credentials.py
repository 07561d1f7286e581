"""tenant_svc's side of credentials: it mints and stores API keys (hashed), answers the edge's
key lookups from PostgreSQL, and says who is acting for the audit log."""

from __future__ import annotations

import asyncio

from psycopg_pool import AsyncConnectionPool
from pydantic import SecretStr

from common import context
from common.auth import ApiKeyRecord, generate_api_key
from common.auth.settings import AuthSettings
from common.errors import FailedPrecondition, Unavailable
from tenant_svc.db.database import DatabaseSettings, open_pool
from tenant_svc.repository import Repository


class ApiKeyIssuer:
    """New keys as ``(plaintext, key_id, secret_hash)``; the pepper comes from the environment."""

    def __init__(self, settings: AuthSettings | None = None) -> None:
        pepper = (settings or AuthSettings()).api_key_pepper
        self._pepper = pepper.get_secret_value().encode() if pepper else None

    def generate(self) -> tuple[str, str, str]:
        return generate_api_key(self._pepper)


class PostgresApiKeys:
    """``common.auth.ApiKeyStore`` over the repository's owner-only lookup function."""

    def __init__(self, repo: Repository) -> None:
        self._repo = repo

    async def lookup(self, key_id: str) -> ApiKeyRecord | None:
        row = await self._repo.lookup_api_key(key_id)
        if row is None:
            return None
        return ApiKeyRecord(
            row.key_id,
            row.tenant_id,
            frozenset(row.roles),
            row.secret_hash,
            revoked=row.revoke_time is not None,
            expires_at=row.expire_time,
        )


def actor() -> str:
    """The acting credential's subject (a user id or an API key id), never its secret."""
    p = context.principal()
    return p.subject[:200] if p else "unknown"


def is_platform() -> bool:
    p = context.principal()
    return p is not None and p.is_platform


class LazyPostgresApiKeys:
    """The key store for another edge process (the gateway): a small pool to the same database,
    opened on the first API key seen, that only calls the owner-only lookup function. Never
    migrates; until tenant_svc has created the schema, lookups are UNAVAILABLE."""

    def __init__(self, settings: DatabaseSettings) -> None:
        self._settings = settings.model_copy(
            update={"admin_url": SecretStr(""), "pool_min_size": 0, "pool_max_size": 2}
        )
        self._keys: PostgresApiKeys | None = None
        self._pool: AsyncConnectionPool | None = None
        self._lock = asyncio.Lock()

    async def lookup(self, key_id: str) -> ApiKeyRecord | None:
        if self._keys is None:
            async with self._lock:
                if self._keys is None:
                    try:
                        self._pool = await open_pool(self._settings)
                    except FailedPrecondition as e:
                        raise Unavailable(
                            "API keys cannot be checked yet: the tenant database is not ready"
                        ) from e
                    self._keys = PostgresApiKeys(Repository(self._pool))
        return await self._keys.lookup(key_id)

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
