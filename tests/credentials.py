"""Credentials for the tests: one dev-mode signing key for the whole session (and every process
it starts, through VOICEAI_AUTH_DEV_KEY_DIR), and tokens minted with it."""

from __future__ import annotations

import functools
import os
import tempfile
from pathlib import Path

from common.auth import InternalTokenIssuer, Principal, dev_signing_key, mint_dev_token
from common.auth.keys import DEV_INTERNAL_KEY_NAME

if not os.environ.get("VOICEAI_AUTH_DEV_KEY_DIR"):
    os.environ["VOICEAI_AUTH_DEV_KEY_DIR"] = tempfile.mkdtemp(prefix="voiceai-dev-auth-")
KEY_DIR = Path(os.environ["VOICEAI_AUTH_DEV_KEY_DIR"])


@functools.cache
def token(tenant: str | None, roles: tuple[str, ...] = ("agent",), ttl_s: int = 24 * 3600) -> str:
    return mint_dev_token(dev_signing_key(KEY_DIR), tenant=tenant, roles=list(roles), ttl_s=ttl_s)


def bearer(tenant: str | None, roles: tuple[str, ...] = ("agent",)) -> tuple[str, str]:
    """The ``authorization`` metadata entry for ``tenant`` with ``roles``."""
    return ("authorization", f"Bearer {token(tenant, roles)}")


@functools.cache
def _internal_issuer() -> InternalTokenIssuer:
    return InternalTokenIssuer(dev_signing_key(KEY_DIR, DEV_INTERNAL_KEY_NAME))


def internal_bearer(
    service: str, call_id: str, tenant: str, roles: tuple[str, ...] = ("agent",)
) -> tuple[str, str]:
    """What the gateway forwards to ``service`` for ``call_id``: an internal token for that hop."""
    principal = Principal("test-caller", tenant, frozenset(roles), "jwt")
    return ("authorization", _internal_issuer().authorization_for(principal, service, call_id))
