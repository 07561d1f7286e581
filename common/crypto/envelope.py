"""AES-256-GCM sealing of one field with one tenant data key.

A sealed value is ``0x01 | key version (4 bytes, big-endian) | nonce (12) | ciphertext+tag``.
The associated data binds the ciphertext to its tenant, record and field, so a value copied
into another tenant's row, another record or another column fails to open instead of
decrypting as someone else's data.
"""

from __future__ import annotations

import os
import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from common.crypto.errors import DataLoss

FORMAT = 1
_HEADER = struct.Struct(">BI")
NONCE_BYTES = 12
OVERHEAD = _HEADER.size + NONCE_BYTES + 16
DATA_KEY_BYTES = 32


def associated_data(tenant_id: str, record: str, field: str) -> bytes:
    """What a sealed value is bound to: tenant, record and field (NUL-separated)."""
    return b"voiceai/v1\x00" + "\x00".join((tenant_id, record, field)).encode()


def new_data_key() -> bytes:
    """A fresh random 256-bit data key."""
    return AESGCM.generate_key(bit_length=256)


def seal(key: bytes, version: int, plaintext: bytes, aad: bytes) -> bytes:
    """Encrypt ``plaintext`` under data key ``version``; a fresh random nonce per value."""
    nonce = os.urandom(NONCE_BYTES)
    return _HEADER.pack(FORMAT, version) + nonce + AESGCM(key).encrypt(nonce, plaintext, aad)


def key_version(sealed: bytes, field: str = "value") -> int:
    """The data-key version a sealed value was written with; DataLoss if it is not one."""
    if len(sealed) < OVERHEAD:
        raise DataLoss(f"the stored {field} is truncated and cannot be decrypted")
    fmt, version = _HEADER.unpack_from(sealed)
    if fmt != FORMAT:
        raise DataLoss(f"the stored {field} has an unknown encryption format and cannot be decrypted")
    return int(version)


def open_sealed(key: bytes, sealed: bytes, aad: bytes, field: str = "value") -> bytes:
    """Decrypt a value from ``seal``; DataLoss naming ``field`` when it was altered or misplaced."""
    key_version(sealed, field)
    start = _HEADER.size
    nonce = sealed[start : start + NONCE_BYTES]
    try:
        return AESGCM(key).decrypt(nonce, sealed[start + NONCE_BYTES :], aad)
    except InvalidTag as e:
        raise DataLoss(f"the stored {field} failed its integrity check and cannot be decrypted") from e


__all__ = [
    "DATA_KEY_BYTES",
    "OVERHEAD",
    "associated_data",
    "key_version",
    "new_data_key",
    "open_sealed",
    "seal",
]
