"""Key-encryption keys (KEKs): what wraps each tenant's data keys.

``KeyProvider`` is the seam a cloud KMS or Vault transit implements. A wrapped data key says
which KEK wrapped it (``kek_id_of``), so a KEK rotation rewraps data keys one by one while every
old wrapping still opens; tenant data itself is never rewritten by a KEK rotation.

``LocalKeyProvider`` (development, single host) reads a key ring file named by
``VOICEAI_KEK_FILE``: ``{"current": "kek-2", "keys": {"kek-1": "<base64 32 bytes>", ...}}``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
from pathlib import Path
from typing import Literal, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from common.crypto.errors import DataLoss, MissingKek


class KeyProvider(Protocol):
    """Wraps and unwraps data keys with a key-encryption key the service never stores itself."""

    @property
    def current_kek_id(self) -> str:
        """The KEK that new wrappings use."""
        ...

    def kek_id_of(self, wrapped: bytes) -> str:
        """Which KEK wrapped ``wrapped``."""
        ...

    async def wrap(self, data_key: bytes, context: bytes) -> bytes:
        """``data_key`` wrapped by the current KEK, bound to ``context`` (the tenant)."""
        ...

    async def unwrap(self, wrapped: bytes, context: bytes) -> bytes:
        """The data key inside ``wrapped``; DataLoss if it does not open."""
        ...

    async def rewrap(self, wrapped: bytes, context: bytes) -> bytes:
        """``wrapped`` re-wrapped by the current KEK (the data key is unchanged)."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...


class KekSettings(BaseSettings):
    """Which key provider wraps data keys (env prefix ``VOICEAI_``)."""

    model_config = SettingsConfigDict(env_prefix="VOICEAI_", extra="ignore")

    kek_provider: Literal["local", "vault"] = "local"
    # local: the key ring file (created by `python -m common.crypto init-kek PATH` in dev).
    kek_file: Path | None = None
    # vault: Vault's address, a token with transit encrypt/decrypt/rewrap on the key, the key.
    vault_addr: str = ""
    vault_token: SecretStr = Field(default=SecretStr(""))
    vault_transit_key: str = "voiceai-kek"
    vault_transit_mount: str = "transit"
    vault_namespace: str = ""
    vault_timeout_s: float = 5.0


_SEP = b":"


class LocalKeyProvider:
    """KEKs from a local key ring file; wrapping is AES-256-GCM bound to the context."""

    def __init__(self, keys: dict[str, bytes], current: str) -> None:
        if current not in keys:
            raise MissingKek(f"the key ring has no key named {current!r} (its 'current')")
        for kek_id, key in keys.items():
            if len(key) != 32 or not kek_id or ":" in kek_id:
                raise MissingKek(f"key ring entry {kek_id!r} must be 32 bytes under a name without ':'")
        self._keys = dict(keys)
        self._current = current

    @classmethod
    def from_file(cls, path: Path | None) -> LocalKeyProvider:
        """Read the key ring at ``path``; MissingKek naming VOICEAI_KEK_FILE when absent or bad."""
        if path is None:
            raise MissingKek(
                "no key-encryption key: set VOICEAI_KEK_FILE to a key ring file"
                " (create one with `python -m common.crypto init-kek var/kek.json`)"
                " or VOICEAI_KEK_PROVIDER=vault with VOICEAI_VAULT_ADDR"
            )
        try:
            ring = json.loads(path.read_text())
            keys = {k: base64.b64decode(v, validate=True) for k, v in ring["keys"].items()}
            current = str(ring["current"])
        except FileNotFoundError as e:
            raise MissingKek(f"VOICEAI_KEK_FILE names {path}, which does not exist") from e
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise MissingKek(
                f"VOICEAI_KEK_FILE ({path}) is not a readable key ring: {type(e).__name__}"
            ) from e
        return cls(keys, current)

    @property
    def current_kek_id(self) -> str:
        """The KEK that new wrappings use."""
        return self._current

    def kek_id_of(self, wrapped: bytes) -> str:
        """Which KEK wrapped ``wrapped`` (its name prefix)."""
        return wrapped.split(_SEP, 1)[0].decode(errors="replace")

    async def wrap(self, data_key: bytes, context: bytes) -> bytes:
        """``data_key`` wrapped by the current KEK."""
        return self._wrap_with(self._current, data_key, context)

    def _wrap_with(self, kek_id: str, data_key: bytes, context: bytes) -> bytes:
        nonce = os.urandom(12)
        return kek_id.encode() + _SEP + nonce + AESGCM(self._keys[kek_id]).encrypt(nonce, data_key, context)

    async def unwrap(self, wrapped: bytes, context: bytes) -> bytes:
        """The data key inside ``wrapped``."""
        kek_id = self.kek_id_of(wrapped)
        key = self._keys.get(kek_id)
        if key is None:
            raise DataLoss(f"the data key was wrapped by KEK {kek_id!r}, which the key ring no longer has")
        body = wrapped[len(kek_id) + 1 :]
        try:
            return AESGCM(key).decrypt(body[:12], body[12:], context)
        except InvalidTag as e:
            raise DataLoss("a wrapped data key failed its integrity check") from e

    async def rewrap(self, wrapped: bytes, context: bytes) -> bytes:
        """``wrapped`` under the current KEK."""
        return await self.wrap(await self.unwrap(wrapped, context), context)

    async def aclose(self) -> None:
        """Nothing to release."""


def create_key_ring(path: Path, *, rotate: bool = False) -> str:
    """Create ``path`` with one random KEK (or, with ``rotate``, add one and make it current);
    returns the current KEK's id. The file is written 0600 and replaced atomically."""
    ring: dict[str, object] = {"current": "", "keys": {}}
    if path.exists():
        if not rotate:
            return str(json.loads(path.read_text())["current"])
        ring = json.loads(path.read_text())
    keys = ring["keys"]
    assert isinstance(keys, dict)
    kek_id = f"kek-{len(keys) + 1}"
    keys[kek_id] = base64.b64encode(AESGCM.generate_key(bit_length=256)).decode()
    ring["current"] = kek_id
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(ring, f)
    tmp.replace(path)
    return kek_id


async def build_key_provider(settings: KekSettings) -> KeyProvider:
    """The configured provider, checked once: a KEK that cannot be used refuses the start."""
    if settings.kek_provider == "vault":
        from common.crypto.vault import VaultTransitKeyProvider

        provider = VaultTransitKeyProvider.from_settings(settings)
        await provider.check()
        return provider
    return await asyncio.to_thread(LocalKeyProvider.from_file, settings.kek_file)


__all__ = ["KekSettings", "KeyProvider", "LocalKeyProvider", "build_key_provider", "create_key_ring"]
