"""JWT verification rules, the authenticator's cache, settings validation and the dev key,
without a network: what the integration tests cannot reach cheaply, and hypothesis over inputs."""

from __future__ import annotations

import asyncio
import base64
import json
import multiprocessing
import os
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from common import context
from common.auth import (
    Authenticator,
    AuthSettings,
    JwtVerifier,
    Principal,
    SigningKey,
    StaticKeySource,
    TokenRules,
    dev_signing_key,
)
from common.auth.keys import DEV_KEY_NAME
from common.errors import Unauthenticated

KEY = SigningKey.from_private_key(ec.generate_private_key(ec.SECP256R1()))
RULES = TokenRules(issuer="iss", audience="aud", leeway_s=30)


class CountingKeys(StaticKeySource):
    def __init__(self) -> None:
        super().__init__(KEY.public_key)
        self.calls = 0

    async def key_for(self, kid: str | None, alg: str) -> Any:
        self.calls += 1
        return await super().key_for(kid, alg)


def token(**claims: Any) -> str:
    now = int(time.time())
    base = {
        "iss": "iss",
        "aud": "aud",
        "sub": "u",
        "iat": now,
        "exp": now + 60,
        "tenant_id": "t",
        "roles": ["agent"],
    }
    base.update(claims)
    return jwt.encode({k: v for k, v in base.items() if v is not None}, KEY.private_key, algorithm="ES256")


async def verify(tok: str, rules: TokenRules = RULES) -> Principal:
    return (await JwtVerifier(StaticKeySource(KEY.public_key), rules).verify(tok))[0]


async def test_claims_to_principal() -> None:
    assert (await verify(token())).tenant_id == "t"
    # Leeway: 20 s past exp still passes with 30 s leeway; 60 s does not.
    assert (await verify(token(exp=int(time.time()) - 20))).subject == "u"
    with pytest.raises(Unauthenticated, match="expired"):
        await verify(token(exp=int(time.time()) - 60))
    # Roles: unknown ones ignored, a space-separated string accepted.
    assert (await verify(token(roles="agent offline_access viewer"))).roles == {"agent", "viewer"}
    # Platform: no tenant, and a home tenant claim is ignored.
    assert (await verify(token(tenant_id=None, roles=["platform"]))).tenant_id is None
    assert (await verify(token(roles=["platform"]))).is_platform
    for claims, message in [
        ({"tenant_id": None}, "no 'tenant_id' claim"),
        ({"https://voiceai/tenant_id": "other"}, "conflicting tenant claims"),
        ({"tenant_id": "has space"}, "must be 1-128"),
        ({"tenant_id": ["t"]}, "must be 1-128"),
        ({"sub": None}, "'sub' claim"),
        ({"sub": 5}, "'sub'"),
        ({"exp": "soon"}, "malformed token"),
        ({"aud": ["x", "y"]}, "wrong audience"),
    ]:
        with pytest.raises(Unauthenticated, match=message):
            await verify(token(**claims))


def test_hs_and_none_can_never_be_configured() -> None:
    for algorithms in (("HS256",), ("RS256", "none"), ("hs512",), ()):
        with pytest.raises(ValueError):
            TokenRules(issuer="i", audience="a", algorithms=algorithms)
    with pytest.raises(ValidationError, match="never accepted"):
        AuthSettings(algorithms="RS256,HS256")  # type: ignore[arg-type]


def test_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VOICEAI_AUTH_MODE", "jwt")
    monkeypatch.setenv("VOICEAI_AUTH_JWKS_URL", "https://idp/.well-known/jwks.json")
    monkeypatch.setenv("VOICEAI_AUTH_ISSUER", "https://idp/")
    monkeypatch.setenv("VOICEAI_AUTH_ALGORITHMS", "RS256, PS256")
    monkeypatch.setenv("VOICEAI_AUTH_TENANT_CLAIM", "org")
    monkeypatch.setenv("VOICEAI_AUTH_API_KEY_PEPPER", "pepper-value")
    s = AuthSettings()
    assert (s.algorithms, s.tenant_claim, s.leeway_s) == (("RS256", "PS256"), ("org",), 30.0)
    assert "pepper-value" not in repr(s) and s.api_key_pepper is not None
    monkeypatch.delenv("VOICEAI_AUTH_ISSUER")
    with pytest.raises(ValidationError, match="VOICEAI_AUTH_ISSUER"):
        AuthSettings()
    monkeypatch.setenv("VOICEAI_AUTH_ISSUER", "https://idp/")
    monkeypatch.setenv("VOICEAI_AUTH_PUBLIC_KEY_FILE", "/k.pem")
    with pytest.raises(ValidationError, match="exactly one"):
        AuthSettings()


async def test_verified_tokens_are_cached_until_their_expiry() -> None:
    keys = CountingKeys()
    auth = Authenticator(users=JwtVerifier(keys, RULES), cache_size=2)
    tok = token()
    for _ in range(3):
        assert (await auth.authenticate(f"Bearer {tok}")).tenant_id == "t"
    assert keys.calls == 1
    # A token inside its leeway verifies, but is not cached past its exp.
    late = token(exp=int(time.time()) - 5)
    await auth.authenticate(f"Bearer {late}")
    await auth.authenticate(f"Bearer {late}")
    assert keys.calls == 3
    for i in range(5):  # bounded
        await auth.authenticate(f"Bearer {token(sub=f'u{i}')}")
    assert len(auth._cache) == 2
    # Failures are not cached.
    bad = token(iss="other")
    for _ in range(2):
        with pytest.raises(Unauthenticated):
            await auth.authenticate(f"Bearer {bad}")


def b64(value: Any) -> str:
    raw = value if isinstance(value, bytes) else json.dumps(value).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None)
@given(
    header=st.dictionaries(
        st.sampled_from(["alg", "kid", "typ", "crit", "jku"]),
        st.sampled_from(["none", "HS256", "ES256", "RS256", "", "NONE", "hs256"]) | JSONISH,
    ),
    claims=st.dictionaries(
        st.sampled_from(["iss", "aud", "sub", "exp", "nbf", "iat", "tenant_id", "roles"]), JSONISH
    ),
    signature=st.binary(max_size=80),
)
def test_forged_tokens_of_any_shape_are_unauthenticated(header: dict, claims: dict, signature: bytes) -> None:
    forged = f"{b64(header)}.{b64(claims)}.{b64(signature)}"
    auth = Authenticator(users=JwtVerifier(StaticKeySource(KEY.public_key), RULES))
    with pytest.raises(Unauthenticated):
        asyncio.run(auth.authenticate(f"Bearer {forged}"))


@settings(max_examples=200, deadline=None)
@given(
    claims=st.dictionaries(
        st.sampled_from(["sub", "exp", "nbf", "iat", "tenant_id", "roles", "aud"]), JSONISH
    )
)
def test_validly_signed_tokens_with_any_claims_either_verify_or_are_unauthenticated(claims: dict) -> None:
    signed = jwt.encode({"iss": "iss", **claims}, KEY.private_key, algorithm="ES256")
    try:
        principal = asyncio.run(verify(signed))
    except Unauthenticated:
        return
    assert principal.tenant_id is None or context.valid_id(principal.tenant_id)


def test_the_dev_key_is_private_reused_and_refused_when_others_can_read_it(tmp_path: Path) -> None:
    directory = tmp_path / "dev-auth"
    first = dev_signing_key(directory)
    assert dev_signing_key(directory).kid == first.kid
    assert (directory.stat().st_mode & 0o777, (directory / DEV_KEY_NAME).stat().st_mode & 0o777) == (
        0o700,
        0o600,
    )
    assert "PRIVATE" not in repr(first) and first.kid in repr(first)
    os.chmod(directory / DEV_KEY_NAME, 0o644)
    with pytest.raises(PermissionError, match="chmod 600"):
        dev_signing_key(directory)


def _kid_in_child(directory: str, queue: Any) -> None:
    queue.put(dev_signing_key(Path(directory)).kid)


def test_processes_starting_together_share_one_dev_key(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_kid_in_child, args=(str(tmp_path / "shared"), queue)) for _ in range(4)]
    for p in procs:
        p.start()
    kids = {queue.get(timeout=60) for _ in procs}
    for p in procs:
        p.join(timeout=60)
    assert len(kids) == 1
    assert sorted(os.listdir(tmp_path / "shared")) == [DEV_KEY_NAME]  # no temp files left
