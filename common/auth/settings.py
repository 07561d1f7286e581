"""Authentication settings (env prefix ``VOICEAI_AUTH_``), read once at start and passed down."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEV_ISSUER = "voiceai-dev"
INTERNAL_ISSUER = "voiceai-internal"
MESH_AUDIENCE = "voiceai-mesh"


def forbidden_algorithm(alg: str) -> bool:
    """``none`` is no signature at all; ``HS*`` would let anyone holding the *public* key (which
    is public) forge tokens if a verifier ever fed it in as the HMAC secret."""
    return alg.lower() == "none" or alg.upper().startswith("HS")


def _names(value: object) -> object:
    # Env values are comma-separated ("RS256,ES256"), which reads better than JSON lists.
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return value


class AuthSettings(BaseSettings):
    """How a process verifies credentials, and (at the edge) signs internal tokens.

    ``mode='dev'`` needs nothing configured: a local ES256 key in ``dev_key_dir`` signs and
    verifies both user tokens (issuer ``voiceai-dev``) and internal tokens. ``mode='jwt'`` trusts
    an identity provider through ``jwks_url`` or a public key, and requires ``issuer``.
    """

    model_config = SettingsConfigDict(env_prefix="VOICEAI_AUTH_", extra="ignore")

    mode: Literal["dev", "jwt"] = "dev"
    # User tokens: where the identity provider's public keys are (one of the three).
    jwks_url: str = ""
    public_key_file: str = ""
    public_key_pem: str = ""  # the PEM text itself, for platforms that pass keys in env vars
    issuer: str = ""  # dev mode: voiceai-dev
    audience: str = MESH_AUDIENCE
    algorithms: Annotated[tuple[str, ...], NoDecode] = ("RS256", "ES256")
    leeway_s: float = 30.0
    # Claim names, comma-separated, tried in order. The namespaced form is what providers such as
    # Auth0 require for custom claims.
    tenant_claim: Annotated[tuple[str, ...], NoDecode] = ("tenant_id", "https://voiceai/tenant_id")
    roles_claim: Annotated[tuple[str, ...], NoDecode] = ("roles", "https://voiceai/roles")
    jwks_refresh_s: float = 300.0
    # An unknown kid triggers a refetch (key rotation) at most this often.
    jwks_min_refetch_s: float = 30.0
    jwks_timeout_s: float = 5.0
    # Verified tokens are remembered this long (and never past their exp) to skip signature checks.
    token_cache_s: float = 60.0
    token_cache_size: int = 4096
    # API keys (edge only: the gateway and the tenant service have the key store).
    api_key_pepper: SecretStr | None = None
    # A revoked key stops working within this time (the cache of key records).
    api_key_cache_s: float = 30.0
    # Internal tokens: the private key signs (edge), the public key verifies (every service).
    internal_key_file: str = ""
    internal_public_key_file: str = ""
    internal_token_ttl_s: float = 300.0
    dev_key_dir: Path = Path("var/dev-auth")

    @field_validator("algorithms", "tenant_claim", "roles_claim", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        return _names(value)

    @field_validator("algorithms")
    @classmethod
    def _safe_algorithms(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = [alg for alg in value if forbidden_algorithm(alg)]
        if bad:
            raise ValueError(
                f"algorithms {bad} are never accepted: 'none' is unsigned and HS* would accept tokens"
                " forged with the public key; use RS256, ES256, PS256, ES384 or EdDSA"
            )
        if not value:
            raise ValueError("at least one algorithm is needed, e.g. RS256,ES256")
        return value

    @model_validator(mode="after")
    def _complete(self) -> AuthSettings:
        if self.mode == "jwt":
            sources = [s for s in (self.jwks_url, self.public_key_file, self.public_key_pem) if s]
            if len(sources) != 1:
                raise ValueError(
                    "jwt mode needs exactly one of VOICEAI_AUTH_JWKS_URL, VOICEAI_AUTH_PUBLIC_KEY_FILE"
                    " or VOICEAI_AUTH_PUBLIC_KEY_PEM"
                )
            if not self.issuer:
                raise ValueError("jwt mode needs VOICEAI_AUTH_ISSUER (the identity provider's 'iss')")
        if not self.audience:
            raise ValueError("VOICEAI_AUTH_AUDIENCE must not be empty: tokens are checked against it")
        if self.leeway_s < 0 or self.leeway_s > 300:
            raise ValueError("VOICEAI_AUTH_LEEWAY_S must be between 0 and 300 seconds")
        return self

    @property
    def user_issuer(self) -> str:
        return self.issuer or DEV_ISSUER
