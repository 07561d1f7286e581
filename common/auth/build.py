"""Assembles one process's authentication from ``AuthSettings``: the seam services wire in."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from common.auth.api_keys import ApiKeyStore, ApiKeyVerifier, CachedApiKeyStore
from common.auth.authenticator import Authenticator
from common.auth.hops import HopRules
from common.auth.interceptor import AuthServerInterceptor
from common.auth.internal import InternalTokenIssuer, internal_rules
from common.auth.jwks import JwksKeySource, KeySource, StaticKeySource, describe
from common.auth.keys import (
    DEV_INTERNAL_KEY_NAME,
    PublicKey,
    SigningKey,
    dev_signing_key,
    load_ec_private_key,
    load_public_key,
)
from common.auth.rbac import DEFAULT_POLICY, AccessPolicy
from common.auth.settings import AuthSettings
from common.auth.tokens import JwtVerifier, TokenRules

log = logging.getLogger(__name__)


@dataclass
class Auth:
    """What a process needs to check credentials (and, at the edge, to sign internal tokens)."""

    authenticator: Authenticator
    internal_issuer: InternalTokenIssuer | None = None
    api_key_cache: CachedApiKeyStore | None = None
    user_keys: KeySource | None = None

    def server_interceptor(
        self, policy: AccessPolicy = DEFAULT_POLICY, hops: HopRules | None = None
    ) -> AuthServerInterceptor:
        """The interceptor that checks every RPC; ``hops``: which peers and credential kinds this
        service admits (``ServiceHost`` passes its own)."""
        return AuthServerInterceptor(
            self.authenticator, policy, internal_issuer=self.internal_issuer, hops=hops
        )

    async def start(self) -> None:
        """Fetch the identity provider's keys before serving, so a wrong URL shows at start-up
        (the first call does not wait for it). A provider that is down only logs: the keys are
        fetched again on demand."""
        if isinstance(self.user_keys, JwksKeySource) and not await self.user_keys.prime():
            log.warning("auth: the JWKS could not be fetched at start-up; retrying on the first token")

    async def aclose(self) -> None:
        if isinstance(self.user_keys, JwksKeySource):
            await self.user_keys.aclose()


def build_auth(
    settings: AuthSettings,
    *,
    api_keys: ApiKeyStore | None = None,
    issue_internal_tokens: bool = False,
) -> Auth:
    """``api_keys``: the key store, at the edge only (wrapped here in a ``CachedApiKeyStore``).
    ``issue_internal_tokens``: this process forwards internal tokens to its next hops (edge)."""
    dev_key = _dev_key(settings)
    # The internal key is never the user-token key: in dev mode it is a second local key.
    signing = (
        SigningKey.from_private_key(load_ec_private_key(Path(settings.internal_key_file)))
        if settings.internal_key_file
        else (dev_signing_key(settings.dev_key_dir, DEV_INTERNAL_KEY_NAME) if dev_key else None)
    )
    user_keys = StaticKeySource(dev_key.public_key) if dev_key else _user_keys(settings)
    users = JwtVerifier(
        user_keys,
        TokenRules(
            issuer=settings.user_issuer,
            audience=settings.audience,
            algorithms=settings.algorithms,
            leeway_s=settings.leeway_s,
            tenant_claims=settings.tenant_claim,
            roles_claims=settings.roles_claim,
        ),
    )
    internal_public = signing.public_key if signing else _internal_public_key(settings)
    internal = (
        JwtVerifier(StaticKeySource(internal_public), internal_rules(settings.leeway_s))
        if internal_public is not None
        else None
    )
    cache = None
    verifier = None
    if api_keys is not None:
        cache = CachedApiKeyStore(api_keys, ttl_s=settings.api_key_cache_s)
        pepper = settings.api_key_pepper.get_secret_value().encode() if settings.api_key_pepper else None
        verifier = ApiKeyVerifier(cache, pepper)
    issuer = None
    if issue_internal_tokens:
        if signing is None:
            raise ValueError("this process signs internal tokens: set VOICEAI_AUTH_INTERNAL_KEY_FILE")
        issuer = InternalTokenIssuer(signing, ttl_s=settings.internal_token_ttl_s)
    log.info(
        "auth: %s mode, user tokens from %s (issuer %s), internal tokens %s, API keys %s",
        settings.mode,
        describe(user_keys),
        settings.user_issuer,
        "signed and verified" if issuer else ("verified" if internal else "not accepted"),
        "accepted" if verifier else "not accepted",
    )
    authenticator = Authenticator(
        users=users,
        internal=internal,
        api_keys=verifier,
        cache_s=settings.token_cache_s,
        cache_size=settings.token_cache_size,
    )
    return Auth(authenticator, issuer, cache, user_keys)


def _dev_key(settings: AuthSettings) -> SigningKey | None:
    if settings.mode != "dev":
        return None
    log.warning(
        "auth: DEV MODE: tokens are signed with a local key in %s; configure an identity provider"
        " (VOICEAI_AUTH_MODE=jwt) for anything but local development",
        settings.dev_key_dir,
    )
    return dev_signing_key(settings.dev_key_dir)


def _internal_public_key(settings: AuthSettings) -> PublicKey | None:
    if settings.internal_public_key_file:
        return load_public_key(Path(settings.internal_public_key_file).read_bytes())
    return None


def _user_keys(settings: AuthSettings) -> KeySource:
    if settings.jwks_url:
        return JwksKeySource(
            settings.jwks_url,
            settings.algorithms,
            refresh_s=settings.jwks_refresh_s,
            min_refetch_s=settings.jwks_min_refetch_s,
            timeout_s=settings.jwks_timeout_s,
        )
    pem = settings.public_key_pem.encode() or Path(settings.public_key_file).read_bytes()
    return StaticKeySource(load_public_key(pem))
