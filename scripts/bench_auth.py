"""Micro-benchmark of credential checks: what the auth interceptor adds to each RPC.

    PYTHONPATH=. .venv/bin/python scripts/bench_auth.py [--n 2000]

Prints microseconds per operation (best of 5 rounds), in process, no network: signature checks
without the token cache, cache hits, API keys behind the record cache, and the interceptor's
whole admission step (authenticate, tenant check, RBAC) for a cached token.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from common.auth import (
    DEFAULT_POLICY,
    ApiKeyRecord,
    ApiKeyVerifier,
    Authenticator,
    AuthServerInterceptor,
    CachedApiKeyStore,
    InMemoryApiKeyStore,
    InternalTokenIssuer,
    JwtVerifier,
    Principal,
    SigningKey,
    StaticKeySource,
    TokenRules,
    generate_api_key,
)

RULES = TokenRules(issuer="https://idp/", audience="voiceai-mesh")
METHOD = "/voiceai.llm.v1.LanguageModelService/StreamChat"


def token(key: Any, alg: str) -> str:
    """A signed test token with ``key`` and ``alg``."""
    now = int(time.time())
    claims = {
        "iss": RULES.issuer,
        "aud": RULES.audience,
        "sub": "user-1",
        "iat": now,
        "exp": now + 3600,
        "tenant_id": "tenant-a",
        "roles": ["agent"],
    }
    return jwt.encode(claims, key, algorithm=alg, headers={"kid": "k1"})


async def per_op_us(op: Callable[[], Awaitable[Any]], n: int) -> float:
    """Microseconds per call of ``op``, over ``n`` calls."""
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(n):
            await op()
        best = min(best, (time.perf_counter() - start) / n)
    return best * 1e6


async def main(n: int) -> None:
    """Print the per-operation costs of credential checks."""
    ec_key = ec.generate_private_key(ec.SECP256R1())
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    es, rs = token(ec_key, "ES256"), token(rsa_key, "RS256")
    uncached_es = Authenticator(users=JwtVerifier(StaticKeySource(ec_key.public_key()), RULES), cache_size=0)
    uncached_rs = Authenticator(users=JwtVerifier(StaticKeySource(rsa_key.public_key()), RULES), cache_size=0)
    cached = Authenticator(users=JwtVerifier(StaticKeySource(ec_key.public_key()), RULES))
    plaintext, key_id, secret_hash = generate_api_key(b"pepper")
    store = CachedApiKeyStore(
        InMemoryApiKeyStore([ApiKeyRecord(key_id, "tenant-a", frozenset({"agent"}), secret_hash)])
    )
    keys = Authenticator(api_keys=ApiKeyVerifier(store, b"pepper"))
    interceptor = AuthServerInterceptor(cached, DEFAULT_POLICY)
    metadata = (("authorization", f"Bearer {es}"), ("x-tenant-id", "tenant-a"), ("x-call-id", "c1"))
    issuer = InternalTokenIssuer(SigningKey.from_private_key(ec.generate_private_key(ec.SECP256R1())))
    principal = Principal("user-1", "tenant-a", frozenset({"agent"}), "jwt")

    async def mint() -> str:
        return issuer.mint(principal)

    async def forward() -> str:
        return issuer.authorization_for(principal)

    rows = [
        ("ES256 token, signature checked (cache off)", uncached_es.authenticate, f"Bearer {es}"),
        ("RS256 token, signature checked (cache off)", uncached_rs.authenticate, f"Bearer {rs}"),
        ("token cache hit", cached.authenticate, f"Bearer {es}"),
        ("API key, record cached (HMAC-SHA256)", keys.authenticate, f"ApiKey {plaintext}"),
    ]
    print(f"{'operation':<56} {'us/op':>8}")
    for name, fn, arg in rows:
        print(f"{name:<56} {await per_op_us(lambda fn=fn, arg=arg: fn(arg), n):>8.1f}")
    admit = await per_op_us(lambda: interceptor.admit(METHOD, metadata), n)
    print(f"{'interceptor admission, cached token (auth+tenant+RBAC)':<56} {admit:>8.1f}")
    print(f"{'internal token: mint (ES256 sign)':<56} {await per_op_us(mint, n):>8.1f}")
    print(f"{'internal token: cached, per outgoing call':<56} {await per_op_us(forward, n):>8.1f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="operations per round")
    asyncio.run(main(parser.parse_args().n))
