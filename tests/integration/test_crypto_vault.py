"""Vault transit as the KEK provider, against the transit double over real HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from pydantic import SecretStr

from common.crypto import (
    DataLoss,
    KekSettings,
    KeyProviderUnavailable,
    MissingKek,
    TenantKeyring,
    build_key_provider,
)
from common.crypto.vault import VaultTransitKeyProvider
from tests.doubles.vault_transit import VaultTransitDouble
from tests.unit.test_crypto_envelope import MemoryStore


@pytest.fixture
def vault() -> Iterator[tuple[VaultTransitDouble, str]]:
    double = VaultTransitDouble()
    double.create_key("voiceai-kek")
    address = double.start()
    try:
        yield double, address
    finally:
        double.stop()


def _settings(address: str, token: str = "s.test-token", key: str = "voiceai-kek") -> KekSettings:
    return KekSettings(
        kek_provider="vault", vault_addr=address, vault_token=SecretStr(token), vault_transit_key=key
    )


@pytest.fixture
async def provider(vault: tuple[VaultTransitDouble, str]) -> AsyncIterator[VaultTransitKeyProvider]:
    p = await build_key_provider(_settings(vault[1]))
    assert isinstance(p, VaultTransitKeyProvider)
    try:
        yield p
    finally:
        await p.aclose()


async def test_fields_seal_through_vault_wrapped_data_keys(
    vault: tuple[VaultTransitDouble, str], provider: VaultTransitKeyProvider
) -> None:
    keyring = TenantKeyring(provider)
    store = MemoryStore()
    sealed = await keyring.seal(store, "acme", "c1", "turns", b"hello there")
    (key,) = store.rows.values()
    assert key.wrapped.startswith(b"vault:v1:") and key.kek_id == "vault:voiceai-kek:v1"
    assert await TenantKeyring(provider).open(store, "acme", "c1", "turns", sealed) == (b"hello there", False)
    assert ("POST", "/v1/transit/encrypt/voiceai-kek") in vault[0].requests


async def test_kek_rotation_in_vault_rewraps_without_the_key_leaving_vault(
    vault: tuple[VaultTransitDouble, str], provider: VaultTransitKeyProvider
) -> None:
    keyring = TenantKeyring(provider)
    store = MemoryStore()
    sealed = await keyring.seal(store, "acme", "c1", "turns", b"kept")
    vault[0].rotate("voiceai-kek")
    (key,) = store.rows.values()
    store.rows[key.version] = await keyring.rewrap("acme", key)
    assert store.rows[key.version].wrapped.startswith(b"vault:v2:")
    assert ("POST", "/v1/transit/rewrap/voiceai-kek") in vault[0].requests
    assert await TenantKeyring(provider).open(store, "acme", "c1", "turns", sealed) == (b"kept", False)


async def test_a_wrapped_key_bound_to_another_tenant_is_data_loss(provider: VaultTransitKeyProvider) -> None:
    store = MemoryStore()
    await TenantKeyring(provider).seal(store, "acme", "c1", "turns", b"x")
    with pytest.raises(DataLoss, match="HTTP 400"):
        await TenantKeyring(provider).seal(store, "globex", "c1", "turns", b"y")


async def test_vault_outage_is_unavailable_and_a_bad_token_or_key_refuses_the_start(
    vault: tuple[VaultTransitDouble, str], provider: VaultTransitKeyProvider
) -> None:
    vault[0].fail_next.append(503)
    with pytest.raises(KeyProviderUnavailable, match="HTTP 503"):
        await TenantKeyring(provider).seal(MemoryStore(), "acme", "c1", "turns", b"x")
    with pytest.raises(MissingKek, match="VOICEAI_VAULT_TOKEN"):
        await build_key_provider(_settings(vault[1], token="s.wrong"))
    with pytest.raises(MissingKek, match="VOICEAI_VAULT_TRANSIT_KEY"):
        await build_key_provider(_settings(vault[1], key="absent"))
    assert all("s.test-token" not in path for _, path in vault[0].requests)


async def test_tenant_svc_seals_call_records_through_vault(
    vault: tuple[VaultTransitDouble, str], database_settings: object, tmp_path: object
) -> None:
    """The whole service on the Vault provider: records round-trip, wrapped keys are Vault's."""
    from pathlib import Path

    import grpc.aio

    from common.auth import AuthSettings
    from common.gen.voiceai.tenant.v1 import resources_pb2 as pb
    from common.gen.voiceai.tenant.v1 import tenant_service_pb2 as svc
    from tenant_svc.app import Settings, build_host
    from tests.integration.tenant_harness import TenantApi

    key_dir = Path(str(tmp_path))
    host = await build_host(
        Settings(port=0),
        database_settings,  # type: ignore[arg-type]
        auth_settings=AuthSettings(mode="dev", dev_key_dir=str(key_dir)),
        kek_settings=_settings(vault[1]),
    )
    port = await host.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            api = TenantApi(f"127.0.0.1:{port}", key_dir, ch)
            t = await api.new_tenant()
            call = pb.Call(status=pb.CALL_STATUS_COMPLETED)
            call.turns.add(caller_text="held in vault")
            await api.stub.CreateCall(
                svc.CreateCallRequest(parent=f"tenants/{t}", call=call, call_id="c1"),
                metadata=api.md(t, "agent"),
            )
            got = await api.stub.GetCall(
                svc.GetCallRequest(name=f"tenants/{t}/calls/c1"), metadata=api.md(t, "viewer")
            )
            assert got.turns[0].caller_text == "held in vault"
    finally:
        await host.drain(0.5)
    assert ("POST", "/v1/transit/encrypt/voiceai-kek") in vault[0].requests
