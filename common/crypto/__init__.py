"""Envelope encryption of tenant data: per-tenant AES-GCM data keys wrapped by a pluggable KEK."""

from common.crypto.envelope import associated_data, open_sealed, seal
from common.crypto.errors import DataLoss, KeyProviderUnavailable, MissingKek
from common.crypto.kek import KekSettings, KeyProvider, LocalKeyProvider, build_key_provider, create_key_ring
from common.crypto.keyring import DataKeyStore, TenantKeyring, WrappedDataKey

__all__ = [
    "DataKeyStore",
    "DataLoss",
    "KekSettings",
    "KeyProvider",
    "KeyProviderUnavailable",
    "LocalKeyProvider",
    "MissingKek",
    "TenantKeyring",
    "WrappedDataKey",
    "associated_data",
    "build_key_provider",
    "create_key_ring",
    "open_sealed",
    "seal",
]
