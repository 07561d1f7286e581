"""HashiCorp Vault's transit engine as the key provider: the KEK never leaves Vault.

Wrapping is ``POST /v1/<mount>/encrypt/<key>`` with the data key as plaintext and the tenant as
associated data (AES-GCM transit keys authenticate it); unwrapping is ``decrypt``; a KEK
rotation is a rotation of the transit key in Vault, after which ``rewrap`` moves each wrapped
data key to the newest version without Vault ever returning it. The Vault token comes from the
environment (``VOICEAI_VAULT_TOKEN``) and is sent only in ``X-Vault-Token``.
"""

from __future__ import annotations

import base64
from typing import Any

import httpx

from common.crypto.errors import DataLoss, KeyProviderUnavailable, MissingKek
from common.crypto.kek import KekSettings


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class VaultTransitKeyProvider:
    """A ``KeyProvider`` over Vault transit (HTTP API, httpx)."""

    def __init__(
        self,
        addr: str,
        token: str,
        key_name: str,
        *,
        mount: str = "transit",
        namespace: str = "",
        timeout_s: float = 5.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        headers = {"X-Vault-Token": token}
        if namespace:
            headers["X-Vault-Namespace"] = namespace
        self._client = httpx.AsyncClient(
            base_url=addr.rstrip("/"), headers=headers, timeout=timeout_s, transport=transport
        )
        self._key = key_name
        self._mount = mount.strip("/")
        self._latest = 0

    @classmethod
    def from_settings(cls, settings: KekSettings) -> VaultTransitKeyProvider:
        """Built from ``VOICEAI_VAULT_*``; MissingKek naming the setting that is absent."""
        if not settings.vault_addr:
            raise MissingKek("VOICEAI_KEK_PROVIDER=vault needs VOICEAI_VAULT_ADDR (Vault's https address)")
        token = settings.vault_token.get_secret_value()
        if not token:
            raise MissingKek("VOICEAI_KEK_PROVIDER=vault needs VOICEAI_VAULT_TOKEN")
        return cls(
            settings.vault_addr,
            token,
            settings.vault_transit_key,
            mount=settings.vault_transit_mount,
            namespace=settings.vault_namespace,
            timeout_s=settings.vault_timeout_s,
        )

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            response = await self._client.post(f"/v1/{self._mount}/{path}", json=body)
        except httpx.HTTPError as e:
            raise KeyProviderUnavailable(f"Vault did not answer ({type(e).__name__}); retry shortly") from e
        return self._data(response)

    def _data(self, response: httpx.Response) -> dict[str, Any]:
        if response.status_code >= 500 or response.status_code == 429:
            raise KeyProviderUnavailable(f"Vault answered HTTP {response.status_code}; retry shortly")
        if response.status_code in (401, 403):
            raise MissingKek(
                f"Vault refused VOICEAI_VAULT_TOKEN for transit key {self._key!r} (HTTP {response.status_code})"
            )
        if response.status_code >= 400:
            raise DataLoss(f"Vault could not process a wrapped data key (HTTP {response.status_code})")
        data = response.json().get("data")
        if not isinstance(data, dict):
            raise KeyProviderUnavailable("Vault's answer had no data")
        return data

    async def check(self) -> None:
        """Fail the start unless the transit key exists and the token may read it."""
        try:
            response = await self._client.get(f"/v1/{self._mount}/keys/{self._key}")
        except httpx.HTTPError as e:
            raise MissingKek(
                f"cannot reach Vault at VOICEAI_VAULT_ADDR ({type(e).__name__}); the KEK is unavailable"
            ) from e
        if response.status_code == 404:
            raise MissingKek(f"Vault has no transit key {self._key!r} (VOICEAI_VAULT_TRANSIT_KEY)")
        self._latest = int(self._data(response).get("latest_version", 0))

    @property
    def current_kek_id(self) -> str:
        """``vault:<key>:v<latest version>`` as last seen."""
        return f"vault:{self._key}:v{self._latest}"

    def kek_id_of(self, wrapped: bytes) -> str:
        """``vault:<key>:v<N>`` from the ciphertext's ``vault:vN:`` prefix."""
        parts = wrapped.split(b":", 2)
        version = parts[1].decode(errors="replace") if len(parts) == 3 else "?"
        return f"vault:{self._key}:{version}"

    def _note_version(self, ciphertext: str) -> None:
        parts = ciphertext.split(":", 2)
        if len(parts) == 3 and parts[1].startswith("v") and parts[1][1:].isdigit():
            self._latest = max(self._latest, int(parts[1][1:]))

    async def wrap(self, data_key: bytes, context: bytes) -> bytes:
        """``data_key`` encrypted by the transit key's newest version."""
        data = await self._post(
            f"encrypt/{self._key}", {"plaintext": _b64(data_key), "associated_data": _b64(context)}
        )
        ciphertext = str(data["ciphertext"])
        self._note_version(ciphertext)
        return ciphertext.encode()

    async def unwrap(self, wrapped: bytes, context: bytes) -> bytes:
        """The data key, decrypted by Vault."""
        data = await self._post(
            f"decrypt/{self._key}", {"ciphertext": wrapped.decode(), "associated_data": _b64(context)}
        )
        return base64.b64decode(data["plaintext"])

    async def rewrap(self, wrapped: bytes, context: bytes) -> bytes:
        """Vault re-encrypts under the newest version; the data key never leaves Vault."""
        data = await self._post(
            f"rewrap/{self._key}", {"ciphertext": wrapped.decode(), "associated_data": _b64(context)}
        )
        ciphertext = str(data["ciphertext"])
        self._note_version(ciphertext)
        return ciphertext.encode()

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self._client.aclose()


__all__ = ["VaultTransitKeyProvider"]
