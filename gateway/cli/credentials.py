"""The caller's credential: the ``authorization`` header a call through the gateway carries.

``VOICEAI_TOKEN`` (a JWT from the identity provider) or ``VOICEAI_API_KEY`` when set. Otherwise,
on a local mesh in dev mode (``VOICEAI_AUTH_MODE=dev``, the default), a short-lived token for
the tenant is minted with the mesh's dev key, which the services created under
``VOICEAI_AUTH_DEV_KEY_DIR`` (default ``var/dev-auth``) when they started. Never a new key: a
key the mesh does not have would only produce tokens it rejects.
"""

from __future__ import annotations

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from common.auth import AGENT, AuthSettings, dev_signing_key, mint_dev_token
from common.auth.keys import DEV_KEY_NAME

HOW_TO = (
    "set VOICEAI_TOKEN (in dev mode: python -m common.auth mint --tenant <tenant> --role agent)"
    " or VOICEAI_API_KEY"
)


class CallerCredentials(BaseSettings):
    """Credentials from the environment (env prefix ``VOICEAI_``); secrets, never printed."""

    model_config = SettingsConfigDict(env_prefix="VOICEAI_", extra="ignore")

    token: SecretStr | None = None
    api_key: SecretStr | None = None


def authorization_for(
    tenant: str, credentials: CallerCredentials | None = None, auth: AuthSettings | None = None
) -> str:
    """The ``authorization`` value for a call as ``tenant``; "" when there is none to send."""
    credentials = credentials if credentials is not None else CallerCredentials()
    if credentials.token is not None:
        return f"Bearer {credentials.token.get_secret_value()}"
    if credentials.api_key is not None:
        return f"ApiKey {credentials.api_key.get_secret_value()}"
    auth = auth if auth is not None else AuthSettings()
    if auth.mode != "dev" or not (auth.dev_key_dir / DEV_KEY_NAME).exists():
        return ""
    token = mint_dev_token(
        dev_signing_key(auth.dev_key_dir),
        tenant=tenant,
        roles=[AGENT],
        ttl_s=3600,
        subject="voiceai-cli",
        issuer=auth.user_issuer,
        audience=auth.audience,
    )
    return f"Bearer {token}"
