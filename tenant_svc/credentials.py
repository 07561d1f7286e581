"""tenant_svc's side of credentials: it mints and stores API keys (hashed), answers the edge's
key lookups from PostgreSQL, and says who is acting for the audit log."""

from __future__ import annotations

from common import context
from common.auth import ApiKeyRecord, generate_api_key
from common.auth.settings import AuthSettings
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
    """Whether the acting principal is a platform operator."""
    p = context.principal()
    return p is not None and p.is_platform
