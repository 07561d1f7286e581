"""Credential checking for every RPC: JWTs, API keys and internal tokens, tenant match, RBAC.

Wire-in (see ``build_auth``)::

    auth = build_auth(AuthSettings(), api_keys=store, issue_internal_tokens=True)  # edge
    auth = build_auth(AuthSettings())                                               # stt/llm/tts
    await auth.start()
    host = ServiceHost(settings, bindings, interceptors=[auth.server_interceptor()])
    ...
    await auth.aclose()

Handlers read the caller with ``common.context.principal()``.
"""

from common.auth.api_keys import (
    ApiKeyRecord,
    ApiKeyStore,
    ApiKeyVerifier,
    CachedApiKeyStore,
    InMemoryApiKeyStore,
    generate_api_key,
    hash_secret,
    parse_api_key,
)
from common.auth.authenticator import Authenticator
from common.auth.build import Auth, build_auth
from common.auth.interceptor import AuthServerInterceptor
from common.auth.internal import InternalTokenIssuer, internal_rules, mint_dev_token
from common.auth.jwks import JwksKeySource, KeySource, StaticKeySource
from common.auth.keys import SigningKey, dev_signing_key
from common.auth.principal import ADMIN, AGENT, PLATFORM, ROLES, VIEWER, CredentialKind, Principal
from common.auth.rbac import DEFAULT_POLICY, AccessPolicy, Permission, aip_rules
from common.auth.settings import AuthSettings
from common.auth.tokens import JwtVerifier, TokenRules

__all__ = [
    "ADMIN",
    "AGENT",
    "DEFAULT_POLICY",
    "PLATFORM",
    "ROLES",
    "VIEWER",
    "AccessPolicy",
    "ApiKeyRecord",
    "ApiKeyStore",
    "ApiKeyVerifier",
    "Auth",
    "AuthServerInterceptor",
    "AuthSettings",
    "Authenticator",
    "CachedApiKeyStore",
    "CredentialKind",
    "InMemoryApiKeyStore",
    "InternalTokenIssuer",
    "JwksKeySource",
    "JwtVerifier",
    "KeySource",
    "Permission",
    "Principal",
    "SigningKey",
    "StaticKeySource",
    "TokenRules",
    "aip_rules",
    "build_auth",
    "dev_signing_key",
    "generate_api_key",
    "hash_secret",
    "internal_rules",
    "mint_dev_token",
    "parse_api_key",
]
