"""Auth across hops and over time: the edge hands the next hop an internal token, JWKS key
rotation and outages, dev mode end to end (the mint command), and random garbage credentials
over real gRPC."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import grpc.aio
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common.auth import (
    ApiKeyRecord,
    AuthSettings,
    InMemoryApiKeyStore,
    JwksKeySource,
    Principal,
    SigningKey,
    build_auth,
    generate_api_key,
)
from common.auth.internal import InternalTokenIssuer
from common.discovery import ChannelPool, StaticResolver
from common.errors import Unauthenticated, Unavailable
from tests.conftest import running
from tests.integration.auth_harness import (
    TENANT,
    IdentityProvider,
    JwksServer,
    Probe,
    invoke,
    jwt_settings,
    md,
    probe_host,
    write_private_key,
)

UNAUTH = grpc.StatusCode.UNAUTHENTICATED


@pytest.fixture
def idp() -> IdentityProvider:
    return IdentityProvider()


@pytest.fixture
def jwks(idp: IdentityProvider) -> Iterator[JwksServer]:
    with JwksServer(idp).running() as server:
        yield server


@pytest.fixture
def internal_key(tmp_path: Path) -> Path:
    return write_private_key(tmp_path / "internal.pem")


@pytest.fixture
def internal_public(internal_key: Path, tmp_path: Path) -> Path:
    key = serialization.load_pem_private_key(internal_key.read_bytes(), None)
    pem = key.public_key().public_bytes(  # type: ignore[union-attr]
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    path = tmp_path / "internal.pub.pem"
    path.write_bytes(pem)
    return path


async def forward(edge_addr: str, authorization: str, tenant: str = TENANT) -> list[str]:
    async with grpc.aio.insecure_channel(edge_addr) as ch:
        return (await invoke(ch, "Forward", md(authorization, tenant))).decode().split("|")


@pytest.fixture
async def downstream(jwks: JwksServer, internal_public: Path) -> AsyncIterator[str]:
    """An stt/llm/tts-like service: no key store, no signing key; verifies internal tokens."""
    auth = build_auth(jwt_settings(jwks.url, internal_public_key_file=str(internal_public)))
    async with running(probe_host(auth)) as addr:
        yield addr
    await auth.aclose()


async def test_the_edge_forwards_an_internal_token_for_api_keys_and_user_tokens(
    jwks: JwksServer,
    idp: IdentityProvider,
    internal_key: Path,
    downstream: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    plaintext, key_id, secret_hash = generate_api_key()
    store = InMemoryApiKeyStore([ApiKeyRecord(key_id, TENANT, frozenset({"agent"}), secret_hash)])
    edge = build_auth(jwt_settings(jwks.url, internal_key), api_keys=store, issue_internal_tokens=True)
    # The internal token names the service it is minted for: the pool's ("stt").
    pool = ChannelPool("stt", StaticResolver({"stt": [downstream]}))
    try:
        async with running(probe_host(edge, Probe(next_hop=pool))) as edge_addr:
            # The downstream service cannot check API keys; it checks the edge's internal token.
            assert await forward(edge_addr, f"ApiKey {plaintext}") == [
                f"api_key:{key_id}",
                TENANT,
                "agent",
                "internal",
                TENANT,
            ]
            user = idp.token(roles=["agent"])
            assert (await forward(edge_addr, f"Bearer {user}"))[:4] == ["user-1", TENANT, "agent", "internal"]
    finally:
        await pool.close()
        await edge.aclose()
    secret = plaintext.split("_", 2)[2]
    assert secret not in caplog.text and user.split(".")[2] not in caplog.text


async def test_without_an_issuer_the_edge_forwards_user_tokens_as_they_are(
    jwks: JwksServer, idp: IdentityProvider, downstream: str
) -> None:
    edge = build_auth(jwt_settings(jwks.url))
    pool = ChannelPool("down", StaticResolver({"down": [downstream]}))
    try:
        async with running(probe_host(edge, Probe(next_hop=pool))) as edge_addr:
            assert (await forward(edge_addr, f"Bearer {idp.token(roles=['agent'])}"))[3] == "jwt"
    finally:
        await pool.close()
        await edge.aclose()


@pytest.fixture
def mesh_key(internal_key: Path) -> SigningKey:
    return SigningKey.from_private_key(
        serialization.load_pem_private_key(internal_key.read_bytes(), None)  # type: ignore[arg-type]
    )


async def test_internal_tokens_are_checked_like_any_other(mesh_key: SigningKey, downstream: str) -> None:
    rogue_key = SigningKey.from_private_key(ec.generate_private_key(ec.SECP256R1()))
    agent = Principal("svc-user", TENANT, frozenset({"agent"}), "api_key")
    async with grpc.aio.insecure_channel(downstream) as ch:
        good = InternalTokenIssuer(mesh_key).authorization_for(agent, "stt", "call-1")
        assert (await invoke(ch, "Read", md(good))).decode().split("|")[3] == "internal"
        for authorization, tenant, code in [
            (InternalTokenIssuer(rogue_key).authorization_for(agent, "stt", "call-1"), TENANT, UNAUTH),
            (good, "tenant-b", grpc.StatusCode.PERMISSION_DENIED),
        ]:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await invoke(ch, "Read", md(authorization, tenant))
            assert info.value.code() == code


async def test_a_rotated_key_is_picked_up_and_made_up_kids_do_not_hammer_the_provider(
    jwks: JwksServer, idp: IdentityProvider
) -> None:
    source = JwksKeySource(jwks.url, ("RS256", "ES256"), min_refetch_s=0)
    assert await source.prime() and jwks.requests == 1
    idp.rotate("ec-2")
    assert await source.key_for("ec-2", "ES256") is not None
    assert jwks.requests == 2  # one refetch for the new kid

    limited = JwksKeySource(jwks.url, ("RS256", "ES256"), min_refetch_s=3600)
    before = jwks.requests
    results = await asyncio.gather(
        *(limited.key_for(f"ghost-{i}", "ES256") for i in range(30)), return_exceptions=True
    )
    assert all(isinstance(r, Unauthenticated) for r in results)
    assert jwks.requests == before + 1  # the first load only; no refetch per made-up kid


async def test_keys_refresh_in_the_background_and_survive_an_outage(
    jwks: JwksServer, idp: IdentityProvider
) -> None:
    source = JwksKeySource(jwks.url, ("RS256", "ES256"), refresh_s=0, min_refetch_s=3600)
    try:
        await asyncio.gather(*(source.key_for("rsa-1", "RS256") for _ in range(10)))
        assert jwks.requests == 1  # concurrent first lookups share one fetch
        jwks.failing = True
        for _ in range(3):  # stale keys keep working while refreshes fail
            assert await source.key_for("rsa-1", "RS256") is not None
            await asyncio.sleep(0.05)
        jwks.failing = False
        idp.published.remove("rsa-1")  # retired at the provider
        for _ in range(100):
            await asyncio.sleep(0.02)
            try:
                await source.key_for("ec-1", "ES256")  # triggers background refreshes
                await source.key_for("rsa-1", "RS256")
            except Unauthenticated:
                break
        else:
            pytest.fail("a retired key was still trusted after refreshes")
    finally:
        await source.aclose()


async def test_an_unreachable_provider_is_unavailable_not_unauthenticated(idp: IdentityProvider) -> None:
    server = JwksServer(idp)
    server.failing = True
    with server.running():
        auth = build_auth(jwt_settings(server.url))
        await auth.start()  # logs, does not raise
        async with running(probe_host(auth)) as addr, grpc.aio.insecure_channel(addr) as ch:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await invoke(ch, "Read", md(f"Bearer {idp.token()}"))
        await auth.aclose()
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "retry shortly" in (info.value.details() or "")
    with pytest.raises(Unavailable):
        await JwksKeySource("http://127.0.0.1:9/jwks", ("ES256",), timeout_s=1).key_for("k", "ES256")


def test_dev_mode_end_to_end_with_the_mint_command(tmp_path: Path) -> None:
    env = {**os.environ, "VOICEAI_AUTH_DEV_KEY_DIR": str(tmp_path / "dev-auth"), "PYTHONPATH": os.getcwd()}
    env.pop("VOICEAI_AUTH_MODE", None)

    def mint(*args: str) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "common.auth", "mint", *args]
        return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60, check=False)

    admin = mint("--tenant", "demo-tenant", "--role", "admin", "--ttl", "600")
    platform = mint("--platform", "--role", "viewer")
    for result in (admin, platform):
        assert result.returncode == 0, result.stderr
        assert "PRIVATE KEY" not in result.stdout + result.stderr
    assert mint("--role", "admin").returncode == 2  # no tenant
    refused = subprocess.run(
        [sys.executable, "-m", "common.auth", "mint", "--tenant", "t", "--role", "admin"],
        env={
            **env,
            "VOICEAI_AUTH_MODE": "jwt",
            "VOICEAI_AUTH_ISSUER": "x",
            "VOICEAI_AUTH_JWKS_URL": "http://x/",
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert refused.returncode == 2 and "dev mode" in refused.stderr

    async def check() -> tuple[list[str], list[str]]:
        auth = build_auth(AuthSettings(mode="dev", dev_key_dir=tmp_path / "dev-auth"))
        async with running(probe_host(auth)) as addr, grpc.aio.insecure_channel(addr) as ch:
            a = await invoke(ch, "Write", md(f"Bearer {admin.stdout.strip()}", "demo-tenant"))
            p = await invoke(ch, "Manage", md(f"Bearer {platform.stdout.strip()}", "any"))
        return a.decode().split("|"), p.decode().split("|")

    a, p = asyncio.run(check())
    assert a == ["dev-user", "demo-tenant", "admin", "jwt", "demo-tenant"]
    assert p[:4] == ["dev-user", "None", "platform,viewer", "jwt"]
    claims = jwt.decode(admin.stdout.strip(), options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == 600 and claims["iss"] == "voiceai-dev"


class BackgroundMesh:
    """A probe host on its own event loop thread, so synchronous hypothesis tests can call it."""

    def __init__(self, auth_settings: AuthSettings) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._settings = auth_settings

    def __enter__(self) -> BackgroundMesh:
        self._thread.start()
        self.call(self._start())
        return self

    def __exit__(self, *_: object) -> None:
        self.call(self._stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()

    def call(self, coro):  # type: ignore[no-untyped-def]
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=30)

    async def _start(self) -> None:
        self.auth = build_auth(self._settings, api_keys=InMemoryApiKeyStore())
        self.host = probe_host(self.auth)
        self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{await self.host.start()}")

    async def _stop(self) -> None:
        await self.channel.close()
        await self.host.drain(0.5)

    async def code_for(self, authorization: str) -> grpc.StatusCode:
        try:
            await invoke(self.channel, "Read", md(authorization))
        except grpc.aio.AioRpcError as error:
            credential = authorization.split(" ", 1)[-1]
            # Short strings turn up in any message by chance ('.' or 'key'); long ones must not.
            assert len(credential) < 12 or credential not in (error.details() or "")
            return error.code()
        return grpc.StatusCode.OK


@pytest.fixture(scope="module")
def garbage_mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BackgroundMesh]:
    dev_dir = tmp_path_factory.mktemp("dev-auth")
    with BackgroundMesh(AuthSettings(mode="dev", dev_key_dir=dev_dir)) as mesh:
        yield mesh


PRINTABLE = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=300)
JWT_SHAPED = st.lists(
    st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=", max_size=80),
    min_size=2,
    max_size=5,
).map(".".join)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    scheme=st.sampled_from(["Bearer", "ApiKey", "bearer", "Basic", "Token"]),
    credential=st.one_of(PRINTABLE, JWT_SHAPED, PRINTABLE.map(lambda s: "vai_" + s)),
)
def test_garbage_credentials_are_always_unauthenticated(
    garbage_mesh: BackgroundMesh, scheme: str, credential: str
) -> None:
    code = garbage_mesh.call(garbage_mesh.code_for(f"{scheme} {credential}"))
    assert code == UNAUTH
