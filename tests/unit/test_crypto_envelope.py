"""Envelope encryption: AES-GCM fields bound to tenant/record/field, data keys wrapped by a KEK."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest

from common.crypto import (
    DataLoss,
    KekSettings,
    LocalKeyProvider,
    MissingKek,
    TenantKeyring,
    WrappedDataKey,
    build_key_provider,
    create_key_ring,
)
from common.crypto.keyring import SHREDDED


class MemoryStore:
    """A DataKeyStore for one tenant, in memory (the PostgreSQL one is tested in integration)."""

    def __init__(self) -> None:
        self.rows: dict[int, WrappedDataKey] = {}

    async def data_keys(self) -> Sequence[WrappedDataKey]:
        return list(self.rows.values())

    async def add_data_key(self, key: WrappedDataKey) -> bool:
        return self.rows.setdefault(key.version, key) is key


def _drop_kek(path: Path, kek_id: str) -> None:
    ring = json.loads(path.read_text())
    del ring["keys"][kek_id]
    path.write_text(json.dumps(ring))


@pytest.fixture
def ring_file(tmp_path: Path) -> Path:
    path = tmp_path / "kek.json"
    create_key_ring(path)
    return path


async def test_sealed_field_round_trips_and_hides_the_plaintext(ring_file: Path) -> None:
    keyring = TenantKeyring(LocalKeyProvider.from_file(ring_file))
    store = MemoryStore()
    sealed = await keyring.seal(store, "acme", "call-1", "turns", b"my card is 4111")
    assert b"4111" not in sealed and b"card" not in sealed
    assert await keyring.open(store, "acme", "call-1", "turns", sealed) == (b"my card is 4111", False)
    assert all(b"acme" not in k.wrapped for k in store.rows.values())


@pytest.mark.parametrize(
    ("tenant", "record", "field"),
    [("globex", "call-1", "turns"), ("acme", "call-2", "turns"), ("acme", "call-1", "usage")],
)
async def test_a_value_moved_to_another_tenant_record_or_field_does_not_open(
    ring_file: Path, tenant: str, record: str, field: str
) -> None:
    keyring = TenantKeyring(LocalKeyProvider.from_file(ring_file))
    store = MemoryStore()
    sealed = await keyring.seal(store, "acme", "call-1", "turns", b"hello")
    with pytest.raises(DataLoss, match=field):
        await keyring.open(store, tenant, record, field, sealed)


async def test_corrupted_ciphertext_is_data_loss_naming_the_field(ring_file: Path) -> None:
    keyring = TenantKeyring(LocalKeyProvider.from_file(ring_file))
    store = MemoryStore()
    sealed = bytearray(await keyring.seal(store, "acme", "call-1", "turns", b"hello"))
    sealed[-3] ^= 0x40
    with pytest.raises(DataLoss, match="turns failed its integrity check"):
        await keyring.open(store, "acme", "call-1", "turns", bytes(sealed))
    with pytest.raises(DataLoss, match="truncated"):
        await keyring.open(store, "acme", "call-1", "turns", bytes(sealed[:10]))


async def test_data_key_rotation_keeps_old_values_readable_and_flags_them(ring_file: Path) -> None:
    keyring = TenantKeyring(LocalKeyProvider.from_file(ring_file))
    store = MemoryStore()
    old = await keyring.seal(store, "acme", "c", "turns", b"before")
    assert await keyring.rotate("acme", store) == 2
    new = await keyring.seal(store, "acme", "c", "turns", b"after")
    assert await keyring.open(store, "acme", "c", "turns", old) == (b"before", True)
    assert await keyring.open(store, "acme", "c", "turns", new) == (b"after", False)


async def test_kek_rotation_rewraps_data_keys_without_touching_data(ring_file: Path) -> None:
    keyring = TenantKeyring(LocalKeyProvider.from_file(ring_file))
    store = MemoryStore()
    sealed = await keyring.seal(store, "acme", "c", "turns", b"kept")
    create_key_ring(ring_file, rotate=True)
    rotated = TenantKeyring(LocalKeyProvider.from_file(ring_file))
    assert rotated.provider.current_kek_id == "kek-2"
    (key,) = store.rows.values()
    assert key.kek_id == "kek-1"
    store.rows[key.version] = await rotated.rewrap("acme", key)
    assert store.rows[key.version].kek_id == "kek-2"
    # The old KEK can go: the data (never rewritten) still opens through the rewrapped key.
    _drop_kek(ring_file, "kek-1")
    fresh = TenantKeyring(LocalKeyProvider.from_file(ring_file))
    assert await fresh.open(store, "acme", "c", "turns", sealed) == (b"kept", False)


async def test_a_shredded_key_makes_the_data_unreadable_at_once(ring_file: Path) -> None:
    keyring = TenantKeyring(LocalKeyProvider.from_file(ring_file))
    store = MemoryStore()
    sealed = await keyring.seal(store, "acme", "c", "turns", b"secret")
    await keyring.open(store, "acme", "c", "turns", sealed)  # the unwrapped key is now cached
    store.rows = {v: WrappedDataKey(v, b"", SHREDDED) for v in store.rows}  # tombstones
    keyring.forget("acme")
    assert not keyring._unwrapped  # no key material left in memory either
    with pytest.raises(DataLoss, match="shredded"):
        await keyring.open(store, "acme", "c", "turns", sealed)
    # New data gets a new key under a new number; the shredded data stays unreadable.
    fresh = await keyring.seal(store, "acme", "c", "turns", b"after")
    assert await keyring.open(store, "acme", "c", "turns", fresh) == (b"after", False)
    with pytest.raises(DataLoss, match="shredded"):
        await keyring.open(store, "acme", "c", "turns", sealed)


async def test_a_wrapped_key_copied_to_another_tenant_does_not_unwrap(ring_file: Path) -> None:
    keyring = TenantKeyring(LocalKeyProvider.from_file(ring_file))
    acme, globex = MemoryStore(), MemoryStore()
    await keyring.seal(acme, "acme", "c", "turns", b"x")
    globex.rows = dict(acme.rows)
    with pytest.raises(DataLoss, match="wrapped data key"):
        await keyring.seal(globex, "globex", "c", "turns", b"y")


async def test_missing_kek_refuses_the_start_naming_the_setting(tmp_path: Path) -> None:
    with pytest.raises(MissingKek, match="VOICEAI_KEK_FILE"):
        await build_key_provider(KekSettings(kek_file=None))
    with pytest.raises(MissingKek, match=r"VOICEAI_KEK_FILE names .* which does not exist"):
        await build_key_provider(KekSettings(kek_file=tmp_path / "absent.json"))
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(MissingKek, match="not a readable key ring"):
        await build_key_provider(KekSettings(kek_file=tmp_path / "bad.json"))
    with pytest.raises(MissingKek, match="VOICEAI_VAULT_ADDR"):
        await build_key_provider(KekSettings(kek_provider="vault"))


def test_the_key_ring_file_is_private(ring_file: Path) -> None:
    assert ring_file.stat().st_mode & 0o077 == 0
