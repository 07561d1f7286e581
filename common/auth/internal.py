"""Tokens the mesh signs itself: internal tokens for service-to-service hops, and dev tokens.

The edge (gateway, tenant service) verifies the caller's credential, then hands each next hop a
short-lived ES256 token (issuer ``voiceai-internal``) carrying the same subject, tenant and roles,
so services without a key store (stt, llm, tts) can check it locally. Each token names the one
service it is for (``aud`` = ``voiceai-internal:<service>``) and the call it serves
(``call_id``): a token taken from one hop opens nothing on another service or for another call,
and the edge refuses internal tokens (``common.auth.hops``). They are signed with the internal
key, never with a key that signs user tokens. Tokens are re-minted per (principal, service, call)
once half their lifetime has passed, so a call that lasts longer than one token keeps opening
streams with a fresh one.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any

import jwt

from common.auth.hops import INTERNAL_AUDIENCES, audience
from common.auth.keys import SigningKey
from common.auth.principal import PLATFORM, Principal
from common.auth.settings import DEV_ISSUER, INTERNAL_ISSUER, MESH_AUDIENCE
from common.auth.tokens import TokenRules

TENANT_CLAIM = "tenant_id"
ROLES_CLAIM = "roles"


def internal_rules(leeway_s: float = 30.0) -> TokenRules:
    """How every service checks internal tokens."""
    return TokenRules(
        issuer=INTERNAL_ISSUER,
        audience=INTERNAL_AUDIENCES[0],
        extra_audiences=INTERNAL_AUDIENCES[1:],
        algorithms=("ES256",),
        leeway_s=leeway_s,
        tenant_claims=(TENANT_CLAIM,),
        roles_claims=(ROLES_CLAIM,),
        kind="internal",
    )


def sign(key: SigningKey, claims: dict[str, Any]) -> str:
    """``claims`` signed with ``key`` (ES256, its kid in the header)."""
    return jwt.encode(claims, key.private_key, algorithm="ES256", headers={"kid": key.kid})


class InternalTokenIssuer:
    """Signs internal tokens for principals the edge has authenticated."""

    def __init__(self, key: SigningKey, *, ttl_s: float = 300.0, max_cached: int = 4096) -> None:
        if ttl_s < 10:
            raise ValueError("internal tokens need a ttl of at least 10 s")
        self._key = key
        self._ttl_s = ttl_s
        self._max_cached = max_cached
        self._cache: OrderedDict[tuple[Principal, str, str], tuple[str, float]] = OrderedDict()

    def mint(self, principal: Principal, service: str, call_id: str = "") -> str:
        """A token for ``principal`` that only ``service`` accepts, bound to ``call_id``."""
        if not service:
            raise ValueError("an internal token needs the service it is for")
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": INTERNAL_ISSUER,
            "aud": audience(service),
            "call_id": call_id,
            "sub": principal.subject,
            "iat": now,
            "exp": now + int(self._ttl_s),
            ROLES_CLAIM: sorted(principal.roles),
            "src": principal.kind,  # how the edge authenticated the caller, for audit
        }
        if principal.tenant_id is not None:
            claims[TENANT_CLAIM] = principal.tenant_id
        return sign(self._key, claims)

    def authorization_for(self, principal: Principal, service: str, call_id: str = "") -> str:
        """``Bearer <internal token>`` for ``principal`` at ``service`` in ``call_id``: cached,
        fresh for at least half a ttl."""
        now = time.time()
        key = (principal, service, call_id)
        cached = self._cache.get(key)
        if cached is not None and cached[1] > now:
            return cached[0]
        value = f"Bearer {self.mint(principal, service, call_id)}"
        self._cache[key] = (value, now + self._ttl_s / 2)
        self._cache.move_to_end(key)
        while len(self._cache) > self._max_cached:
            self._cache.popitem(last=False)
        return value


def mint_dev_token(
    key: SigningKey,
    *,
    tenant: str | None,
    roles: list[str],
    ttl_s: int = 3600,
    subject: str = "dev-user",
    issuer: str = DEV_ISSUER,
    audience: str = MESH_AUDIENCE,
) -> str:
    """A user token signed with the dev key (what ``python -m common.auth mint`` prints)."""
    if PLATFORM not in roles and not tenant:
        raise ValueError("a tenant is required unless the token has the platform role")
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": issuer,
        "aud": audience,
        "sub": subject,
        "iat": now,
        "exp": now + ttl_s,
        ROLES_CLAIM: sorted(set(roles)),
    }
    if tenant:
        claims[TENANT_CLAIM] = tenant
    return sign(key, claims)
