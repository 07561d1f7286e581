"""API keys: format, hashing at rest (with and without a pepper), verification, and how long a
revoked key keeps working behind the record cache."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from common.auth import (
    ApiKeyRecord,
    ApiKeyVerifier,
    CachedApiKeyStore,
    InMemoryApiKeyStore,
    generate_api_key,
    hash_secret,
    parse_api_key,
)
from common.errors import Unauthenticated, Unavailable

PEPPER = b"server-side pepper"


def test_generated_keys_have_the_documented_shape_and_are_stored_only_as_hashes() -> None:
    seen = set()
    for _ in range(50):
        plaintext, key_id, secret_hash = generate_api_key()
        assert re.fullmatch(r"vai_[a-z2-7]{12}_[A-Za-z0-9_-]{43}", plaintext)
        assert parse_api_key(plaintext) == (key_id, plaintext.split("_", 2)[2])
        secret = plaintext.split("_", 2)[2]
        assert secret not in secret_hash and secret_hash.startswith("sha256$")
        seen.add(plaintext)
    assert len(seen) == 50
    _, key_id, peppered = generate_api_key(PEPPER)
    assert peppered.startswith("hmac-sha256$")


def test_the_hash_binds_the_key_id_and_the_pepper() -> None:
    assert hash_secret("aaaaaaaaaaaa", "s" * 43) != hash_secret("bbbbbbbbbbbb", "s" * 43)
    assert hash_secret("aaaaaaaaaaaa", "s" * 43, PEPPER) != hash_secret("aaaaaaaaaaaa", "s" * 43, b"other")


def record(plaintext: str, pepper: bytes | None = None, **kw: object) -> ApiKeyRecord:
    key_id, secret = parse_api_key(plaintext) or ("", "")
    fields: dict = {"tenant_id": "t1", "roles": frozenset({"agent"}), **kw}
    return ApiKeyRecord(key_id, secret_hash=hash_secret(key_id, secret, pepper), **fields)


async def test_verification_outcomes() -> None:
    good, _, _ = generate_api_key()
    peppered, _, _ = generate_api_key()
    revoked, _, _ = generate_api_key()
    expired, _, _ = generate_api_key()
    operator, _, _ = generate_api_key()
    bad_platform, _, _ = generate_api_key()
    store = InMemoryApiKeyStore(
        [
            record(good),
            record(peppered, PEPPER),
            record(revoked, revoked=True),
            record(expired, expires_at=datetime.now(UTC) - timedelta(seconds=1)),
            record(operator, tenant_id=None, roles=frozenset({"platform"})),
            record(bad_platform, roles=frozenset({"platform", "admin"})),
        ]
    )
    plain = ApiKeyVerifier(store)
    with_pepper = ApiKeyVerifier(store, PEPPER)

    principal = await plain.verify(good)
    assert (principal.tenant_id, principal.roles, principal.kind) == ("t1", frozenset({"agent"}), "api_key")
    assert principal.subject == f"api_key:{good.split('_')[1]}"
    assert (await with_pepper.verify(good)).tenant_id == "t1"  # keys from before the pepper still work
    assert (await with_pepper.verify(peppered)).tenant_id == "t1"
    assert (await plain.verify(operator)).is_platform

    for verifier, key, message in [
        (plain, peppered, "API key not recognised"),  # peppered, but this process has no pepper
        (plain, revoked, "API key revoked"),
        (plain, expired, "API key expired"),
        (plain, bad_platform, "not usable"),
        (plain, good[:-1] + ("x" if good[-1] != "x" else "y"), "API key not recognised"),
        (plain, generate_api_key()[0], "API key not recognised"),
        (plain, "vai_notakey", "malformed API key"),
    ]:
        with pytest.raises(Unauthenticated) as info:
            await verifier.verify(key)
        assert message in info.value.message
        assert key.split("_", 2)[-1] not in info.value.message


async def test_a_failing_store_is_unavailable_and_does_not_leak_its_error() -> None:
    class Broken:
        async def lookup(self, key_id: str) -> ApiKeyRecord | None:
            raise OSError("connection to db at 10.0.0.5 password=hunter2 refused")

    with pytest.raises(Unavailable) as info:
        await ApiKeyVerifier(Broken()).verify(generate_api_key()[0])
    assert "hunter2" not in info.value.message


async def test_the_cache_bounds_how_long_a_revoked_key_works() -> None:
    plaintext, key_id, _ = generate_api_key()
    store = InMemoryApiKeyStore([record(plaintext)])
    cache = CachedApiKeyStore(store, ttl_s=0.2, negative_ttl_s=0.2)
    verifier = ApiKeyVerifier(cache)
    await verifier.verify(plaintext)
    await verifier.verify(plaintext)
    assert store.lookups == 1
    store.revoke(key_id)
    await verifier.verify(plaintext)  # still cached: within the documented bound
    await asyncio.sleep(0.3)
    with pytest.raises(Unauthenticated, match="revoked"):
        await verifier.verify(plaintext)
    # The revoking process can make it immediate.
    other, other_id, _ = generate_api_key()
    store.add(record(other))
    await verifier.verify(other)
    store.revoke(other_id)
    cache.invalidate(other_id)
    with pytest.raises(Unauthenticated, match="revoked"):
        await verifier.verify(other)


async def test_the_cache_remembers_unknown_ids_briefly_and_stays_bounded() -> None:
    store = InMemoryApiKeyStore()
    cache = CachedApiKeyStore(store, max_entries=10)
    for _ in range(3):
        assert await cache.lookup("unknownid234") is None
    assert store.lookups == 1
    for i in range(50):
        await cache.lookup(f"id{i:010d}")
    assert len(cache._entries) == 10


@given(st.text(max_size=200))
def test_parsing_never_raises(text: str) -> None:
    parsed = parse_api_key(text)
    assert parsed is None or text == f"vai_{parsed[0]}_{parsed[1]}"


@given(st.text(max_size=200).map(lambda s: "vai_" + s))
def test_verifying_garbage_is_always_unauthenticated(text: str) -> None:
    with pytest.raises(Unauthenticated):
        asyncio.run(ApiKeyVerifier(InMemoryApiKeyStore()).verify(text))
