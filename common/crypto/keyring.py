"""Per-tenant data keys: created on first use, wrapped by the KEK, unwrapped through a cache.

Where wrapped keys live is a ``DataKeyStore`` (tenant_svc: a PostgreSQL table under RLS, read in
the caller's own transaction). The keyring asks the store for the tenant's wrapped keys on every
seal/open, so a shredded key (rows deleted) stops decryption at once on every replica; only the
KEK unwrap, which may be a remote call, is cached, keyed by the wrapped bytes themselves.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from common.crypto import envelope
from common.crypto.errors import DataLoss
from common.crypto.kek import KeyProvider

SHREDDED = "shredded"  # kek_id of a destroyed version: its number is never reused


@dataclass(frozen=True, slots=True)
class WrappedDataKey:
    """One version of a tenant's data key as stored: wrapped by the KEK ``kek_id``."""

    version: int
    wrapped: bytes
    kek_id: str = ""

    @property
    def shredded(self) -> bool:
        """Destroyed by crypto-shredding (a tombstone: no key material)."""
        return self.kek_id == SHREDDED


class DataKeyStore(Protocol):
    """Storage for wrapped data keys of one tenant (bound by the caller)."""

    async def data_keys(self) -> Sequence[WrappedDataKey]:
        """Every live version, any order."""
        ...

    async def add_data_key(self, key: WrappedDataKey) -> bool:
        """Store ``key`` unless that version exists; False when another writer won."""
        ...


def _context(tenant_id: str) -> bytes:
    return b"voiceai-dek\x00" + tenant_id.encode()


class TenantKeyring:
    """Seals and opens tenant fields with the tenant's data keys (envelope encryption)."""

    def __init__(self, provider: KeyProvider, *, max_cached: int = 4096) -> None:
        self.provider = provider
        self._max_cached = max_cached
        self._unwrapped: OrderedDict[bytes, bytes] = OrderedDict()

    async def _unwrap(self, tenant_id: str, key: WrappedDataKey) -> bytes:
        cache_key = tenant_id.encode() + b"\x00" + key.wrapped
        found = self._unwrapped.get(cache_key)
        if found is not None:
            self._unwrapped.move_to_end(cache_key)
            return found
        plain = await self.provider.unwrap(key.wrapped, _context(tenant_id))
        self._unwrapped[cache_key] = plain
        while len(self._unwrapped) > self._max_cached:
            self._unwrapped.popitem(last=False)
        return plain

    def forget(self, tenant_id: str) -> None:
        """Drop the tenant's unwrapped keys from memory (after a shred in this process)."""
        prefix = tenant_id.encode() + b"\x00"
        for cache_key in [k for k in self._unwrapped if k.startswith(prefix)]:
            del self._unwrapped[cache_key]

    async def _current(self, tenant_id: str, store: DataKeyStore) -> tuple[int, bytes]:
        keys = [k for k in await store.data_keys() if not k.shredded]
        if not keys:  # first use, or every version shredded: a fresh key with a new number
            await self.rotate(tenant_id, store)
            keys = [k for k in await store.data_keys() if not k.shredded]
        newest = max(keys, key=lambda k: k.version)
        return newest.version, await self._unwrap(tenant_id, newest)

    async def rotate(self, tenant_id: str, store: DataKeyStore) -> int:
        """Add a new data-key version; new writes use it, old values open with their own."""
        keys = await store.data_keys()
        version = max((k.version for k in keys), default=0) + 1
        wrapped = await self.provider.wrap(envelope.new_data_key(), _context(tenant_id))
        await store.add_data_key(WrappedDataKey(version, wrapped, self.provider.kek_id_of(wrapped)))
        return version

    async def derived_keys(
        self, tenant_id: str, store: DataKeyStore, purpose: str
    ) -> list[tuple[int, bytes]]:
        """Per-purpose keys (HKDF-SHA256 of each data-key version), newest first: what another
        process may hold without being able to open anything else sealed for the tenant."""
        await self._current(tenant_id, store)  # creates the first data key if needed
        out = []
        for key in sorted((k for k in await store.data_keys() if not k.shredded), key=lambda k: -k.version):
            base = await self._unwrap(tenant_id, key)
            info = b"voiceai/" + purpose.encode() + b"\x00" + tenant_id.encode()
            out.append(
                (key.version, HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(base))
            )
        return out

    async def rewrap(self, tenant_id: str, key: WrappedDataKey) -> WrappedDataKey:
        """``key`` wrapped by the current KEK (KEK rotation; no tenant data changes)."""
        wrapped = await self.provider.rewrap(key.wrapped, _context(tenant_id))
        return WrappedDataKey(key.version, wrapped, self.provider.kek_id_of(wrapped))

    async def seal(
        self, store: DataKeyStore, tenant_id: str, record: str, field: str, plaintext: bytes
    ) -> bytes:
        """``plaintext`` sealed with the tenant's newest data key, bound to record and field."""
        version, key = await self._current(tenant_id, store)
        return envelope.seal(key, version, plaintext, envelope.associated_data(tenant_id, record, field))

    async def open(
        self, store: DataKeyStore, tenant_id: str, record: str, field: str, sealed: bytes
    ) -> tuple[bytes, bool]:
        """The plaintext, and whether it was sealed with an older data key (re-seal it lazily).
        DataLoss naming ``field`` when the key is gone (shredded) or the value was altered."""
        version = envelope.key_version(sealed, field)
        keys = {k.version: k for k in await store.data_keys()}
        wrapped = keys.get(version)
        if wrapped is None or wrapped.shredded:
            raise DataLoss(f"the key that encrypted {field} no longer exists (the data was shredded)")
        try:
            key = await self._unwrap(tenant_id, wrapped)
        except DataLoss as e:
            raise DataLoss(f"the data key for {field} cannot be unwrapped: {e.message}") from e
        plaintext = envelope.open_sealed(
            key, sealed, envelope.associated_data(tenant_id, record, field), field
        )
        return plaintext, version < max(keys)


__all__ = ["SHREDDED", "DataKeyStore", "TenantKeyring", "WrappedDataKey"]
