"""The auth interceptor over real loopback gRPC, with tokens from a real JWKS endpoint: bad
credentials are UNAUTHENTICATED, the wrong tenant or too few permissions PERMISSION_DENIED, and
no credential ever shows up in a status message or a log line."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import grpc.aio
import jwt
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from common.auth import (
    ApiKeyRecord,
    Auth,
    Authenticator,
    AuthServerInterceptor,
    InMemoryApiKeyStore,
    Principal,
    generate_api_key,
)
from common.server import ServiceBinding, ServiceHost
from common.settings import ServiceSettings
from tests.conftest import running
from tests.integration.auth_harness import (
    POLICY,
    SERVICE,
    TENANT,
    IdentityProvider,
    JwksServer,
    Probe,
    hand_made,
    hs256_with,
    invoke,
    jwt_settings,
    md,
    probe_host,
)
from tests.integration.auth_harness import edge_auth as make_auth

UNAUTH = grpc.StatusCode.UNAUTHENTICATED
DENIED = grpc.StatusCode.PERMISSION_DENIED


@pytest.fixture(scope="module")
def idp() -> IdentityProvider:
    return IdentityProvider()


@pytest.fixture(scope="module")
def jwks(idp: IdentityProvider) -> Iterator[JwksServer]:
    with JwksServer(idp).running() as server:
        yield server


class Keys:
    """API keys of two tenants, one revoked, in an in-memory store."""

    def __init__(self) -> None:
        self.store = InMemoryApiKeyStore()
        self.plain: dict[str, str] = {}
        for name, tenant, roles in [
            ("a-admin", TENANT, {"admin"}),
            ("a-viewer", TENANT, {"viewer"}),
            ("b-agent", "tenant-b", {"agent"}),
            ("revoked", TENANT, {"admin"}),
        ]:
            plaintext, key_id, secret_hash = generate_api_key()
            self.store.add(ApiKeyRecord(key_id, tenant, frozenset(roles), secret_hash))
            self.plain[name] = plaintext
        self.store.revoke(self.plain["revoked"].split("_")[1])


@pytest.fixture(scope="module")
def keys() -> Keys:
    return Keys()


@pytest.fixture
async def addr(jwks: JwksServer, keys: Keys) -> AsyncIterator[str]:
    auth = make_auth(jwt_settings(jwks.url), keys.store)
    await auth.start()
    try:
        async with running(probe_host(auth)) as address:
            yield address
    finally:
        await auth.aclose()


async def refused(
    address: str, metadata: tuple[tuple[str, str], ...], method: str = "Read"
) -> grpc.aio.AioRpcError:
    async with grpc.aio.insecure_channel(address) as ch:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await invoke(ch, method, metadata)
    return info.value


async def admitted(address: str, metadata: tuple[tuple[str, str], ...], method: str = "Read") -> list[str]:
    async with grpc.aio.insecure_channel(address) as ch:
        return (await invoke(ch, method, metadata)).decode().split("|")


def bad_tokens(idp: IdentityProvider) -> dict[str, tuple[str, str]]:
    """name -> (token, a fragment of the message the caller must get)."""
    good = idp.token()
    head, payload, signature = good.split(".")
    mid = len(signature) // 2
    flipped = signature[:mid] + ("A" if signature[mid] != "A" else "B") + signature[mid + 1 :]
    other_tenant = idp.token(tenant_id="tenant-b").split(".")[1]
    header = {"alg": "RS256", "typ": "JWT", "kid": "rsa-1"}
    return {
        "not a jwt": ("not-a-token", "malformed token"),
        "three garbage parts": ("a.b.c", "malformed token"),
        "expired": (idp.token(exp=1_600_000_000, iat=1_599_999_000), "token expired"),
        "not yet valid": (idp.token(nbf=int(time.time()) + 3600), "not yet valid"),
        "issued in the future": (idp.token(iat=int(time.time()) + 3600), "not yet valid"),
        "wrong issuer": (idp.token(iss="https://evil.test/"), "wrong issuer"),
        "wrong audience": (idp.token(aud="someone-else"), "wrong audience"),
        "no exp": (idp.token(exp=None), "'exp' claim"),
        "no tenant": (idp.token(tenant_id=None), "no 'tenant_id' claim"),
        "alg none": (hand_made({**header, "alg": "none"}, idp.claims()), "algorithm 'none'"),
        "HS256 keyed with the public key": (
            hand_made({**header, "alg": "HS256"}, idp.claims(), hs256_with(idp.public_pem())),
            "unsupported algorithm 'HS256'",
        ),
        "unknown kid": (_ghost(idp), "signing key id"),
        "tampered signature": (f"{head}.{payload}.{flipped}", "signature does not verify"),
        "tampered claims": (f"{head}.{other_tenant}.{signature}", "signature does not verify"),
        "ES256 token claiming the RSA kid": (_ghost(idp, kid="rsa-1"), "does not match"),
    }


def _ghost(idp: IdentityProvider, kid: str = "ghost") -> str:
    """Signed by a key the provider never published."""
    from cryptography.hazmat.primitives.asymmetric import ec

    return jwt.encode(
        idp.claims(), ec.generate_private_key(ec.SECP256R1()), algorithm="ES256", headers={"kid": kid}
    )


@pytest.mark.parametrize(
    "case",
    [
        "not a jwt",
        "three garbage parts",
        "expired",
        "not yet valid",
        "issued in the future",
        "wrong issuer",
        "wrong audience",
        "no exp",
        "no tenant",
        "alg none",
        "HS256 keyed with the public key",
        "unknown kid",
        "tampered signature",
        "tampered claims",
        "ES256 token claiming the RSA kid",
    ],
)
async def test_bad_tokens_are_unauthenticated_with_a_reason_and_never_echoed(
    case: str, idp: IdentityProvider, addr: str, caplog: pytest.LogCaptureFixture
) -> None:
    token, fragment = bad_tokens(idp)[case]
    caplog.set_level(logging.DEBUG)
    error = await refused(addr, md(f"Bearer {token}"))
    details = error.details() or ""
    assert error.code() == UNAUTH, details
    assert fragment in details, details
    for part in {token, *token.split(".")} - {"", "a", "b", "c"}:
        assert part not in details
        assert part not in caplog.text


async def test_missing_or_unusable_authorization_is_unauthenticated(addr: str, idp: IdentityProvider) -> None:
    for authorization, fragment in [
        (None, "missing 'authorization' metadata"),
        ("", "missing 'authorization' metadata"),
        (idp.token(), "unsupported 'authorization' metadata"),  # no scheme
        (f"Basic {idp.token()}", "unsupported 'authorization' metadata"),
        ("Bearer ", "unsupported 'authorization' metadata"),
        ("Bearer " + "x" * 7000, "longer than 6144"),
    ]:
        error = await refused(addr, md(authorization))
        assert (error.code(), fragment in (error.details() or "")) == (UNAUTH, True), error.details()
    twice = (*md(f"Bearer {idp.token()}"), ("authorization", f"Bearer {idp.token()}"))
    error = await refused(addr, twice)
    assert error.code() == UNAUTH and "exactly one" in (error.details() or "")


async def test_a_valid_token_binds_its_principal_for_every_rpc_kind(addr: str, idp: IdentityProvider) -> None:
    for method in ("Read", "Write", "Call"):
        for kid in ("rsa-1", "ec-1"):
            assert await admitted(addr, md(f"Bearer {idp.token(kid)}"), method) == [
                "user-1",
                TENANT,
                "admin",
                "jwt",
                TENANT,
            ]
    namespaced = idp.token(
        tenant_id=None,
        roles=None,
        **{"https://voiceai/tenant_id": TENANT, "https://voiceai/roles": ["agent"]},
    )
    assert (await admitted(addr, md(f"bearer {namespaced}"), "Call"))[:4] == [
        "user-1",
        TENANT,
        "agent",
        "jwt",
    ]


async def test_another_tenants_id_is_permission_denied_without_saying_whose(
    addr: str, idp: IdentityProvider, keys: Keys
) -> None:
    for authorization in (f"Bearer {idp.token()}", f"ApiKey {keys.plain['a-admin']}"):
        error = await refused(addr, md(authorization, tenant="tenant-b"))
        details = error.details() or ""
        assert error.code() == DENIED
        assert "not valid for the tenant named in 'x-tenant-id'" in details
        assert TENANT not in details and "tenant-b" not in details
    b_key = keys.plain["b-agent"]
    error = await refused(addr, md(f"Bearer {b_key}", tenant=TENANT), "Call")
    assert error.code() == DENIED


async def test_roles_decide_which_methods_may_be_called(addr: str, idp: IdentityProvider) -> None:
    def as_(*roles: str, platform: bool = False) -> tuple[tuple[str, str], ...]:
        tenant = None if platform else TENANT
        return md(
            f"Bearer {idp.token(roles=list(roles), tenant_id=tenant)}",
            tenant="any-tenant" if platform else TENANT,
        )

    allowed = {
        ("viewer",): {"Read"},
        ("agent",): {"Read", "Call"},
        ("admin",): {"Read", "Write", "Call"},
        (): set(),
    }
    for roles, methods in allowed.items():
        for method in ("Read", "Write", "Call", "Manage"):
            if method in methods:
                assert (await admitted(addr, as_(*roles), method))[2] == ",".join(roles)
            else:
                error = await refused(addr, as_(*roles), method)
                assert error.code() == DENIED, (roles, method)
                needed = {"Read": "read", "Write": "write", "Call": "call", "Manage": "manage_tenants"}[
                    method
                ]
                assert f"permission '{needed}' is required" in (error.details() or "")
    # Platform operators manage tenants, whichever tenant a request names; nothing else.
    assert await admitted(addr, as_("platform", platform=True), "Manage") == [
        "user-1",
        "None",
        "platform",
        "jwt",
        "any-tenant",
    ]
    assert (await refused(addr, as_("platform", platform=True), "Write")).code() == DENIED
    # With a tenant role too, an operator may also act inside any tenant.
    assert (await admitted(addr, as_("platform", "admin", platform=True), "Write"))[4] == "any-tenant"


async def test_methods_missing_from_the_policy_are_denied_to_everyone(
    addr: str, idp: IdentityProvider
) -> None:
    token = idp.token(roles=["admin", "agent", "viewer"])
    error = await refused(addr, md(f"Bearer {token}"), "Unlisted")
    assert error.code() == DENIED and "not in the access policy" in (error.details() or "")


async def test_api_keys(addr: str, keys: Keys, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    admin = keys.plain["a-admin"]
    key_id = admin.split("_")[1]
    for authorization in (f"ApiKey {admin}", f"Bearer {admin}", f"apikey {admin}"):
        assert await admitted(addr, md(authorization), "Write") == [
            f"api_key:{key_id}",
            TENANT,
            "admin",
            "api_key",
            TENANT,
        ]
    viewer = keys.plain["a-viewer"]
    assert (await refused(addr, md(f"ApiKey {viewer}"), "Write")).code() == DENIED
    forged = admin[:-4] + ("AAAA" if not admin.endswith("AAAA") else "BBBB")
    unknown, _, _ = generate_api_key()
    for presented, fragment in [
        (keys.plain["revoked"], "API key revoked"),
        (unknown, "API key not recognised"),
        (forged, "API key not recognised"),
        ("vai_short", "malformed API key"),
    ]:
        error = await refused(addr, md(f"ApiKey {presented}"))
        details = error.details() or ""
        assert (error.code(), fragment in details) == (UNAUTH, True), details
        secret = presented.split("_", 2)[-1]
        assert secret not in details and secret not in caplog.text


async def test_health_needs_no_credential(addr: str) -> None:
    async with grpc.aio.insecure_channel(addr) as ch:
        reply = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest())
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_the_tenant_header_is_still_required_and_checked_first(
    addr: str, idp: IdentityProvider
) -> None:
    async with grpc.aio.insecure_channel(addr) as ch:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await invoke(ch, "Read", (("authorization", f"Bearer {idp.token()}"), ("x-call-id", "c")))
    assert info.value.code() == UNAUTH and "missing 'x-tenant-id'" in (info.value.details() or "")


async def test_a_service_without_a_key_store_refuses_api_keys_with_a_hint(
    jwks: JwksServer, keys: Keys, tmp_path: Path
) -> None:
    auth: Auth = make_auth(jwt_settings(jwks.url))
    async with running(probe_host(auth)) as address:
        error = await refused(address, md(f"ApiKey {keys.plain['a-admin']}"))
    await auth.aclose()
    # Refused as the wrong kind of credential for an internal service (issue 14), not as unknown.
    assert (
        error.code() == grpc.StatusCode.PERMISSION_DENIED
        and "accepted at the gateway and tenant service only" in (error.details() or "")
    )


async def test_a_bug_in_the_credential_check_fails_closed_without_leaking() -> None:
    class Broken(Authenticator):
        async def authenticate(self, header: str) -> Principal:
            raise RuntimeError(f"bug while handling {header}")

    host = ServiceHost(
        ServiceSettings(),
        [ServiceBinding(SERVICE, Probe().add_to)],
        interceptors=[AuthServerInterceptor(Broken(), POLICY)],
    )
    async with running(host) as address:
        error = await refused(address, md("Bearer sekrit-token-value"))
    assert error.code() == grpc.StatusCode.INTERNAL
    assert "sekrit" not in (error.details() or "")
