"""Where LiveKit is and how tenant_svc uses it (env-first, read once at start)."""

from __future__ import annotations

from typing import Literal

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

CREDENTIAL_VARIABLES = ("LIVEKIT_URL", "LIVEKIT_API_KEY", "LIVEKIT_API_SECRET")


class LiveKitSettings(BaseSettings):
    """LiveKit server API credentials (LiveKit's own variable names) and SIP provisioning choices.

    Provisioning is on only when all three of ``LIVEKIT_URL``, ``LIVEKIT_API_KEY`` and
    ``LIVEKIT_API_SECRET`` are set; the secret is a SecretStr and never printed.
    """

    model_config = SettingsConfigDict(env_prefix="VOICEAI_LIVEKIT_", extra="ignore", populate_by_name=True)

    url: str = Field(default="", validation_alias=AliasChoices("url", "LIVEKIT_URL"))
    api_key: str = Field(default="", validation_alias=AliasChoices("api_key", "LIVEKIT_API_KEY"))
    api_secret: SecretStr = Field(
        default=SecretStr(""), validation_alias=AliasChoices("api_secret", "LIVEKIT_API_SECRET")
    )
    # The agent name the gateway's LiveKit worker registers with: dispatch rules and outbound
    # calls dispatch this name, with metadata naming tenant, agent and number.
    agent_name: str = "voiceai-gateway"
    # Names of the SIP objects this mesh owns start with "<tag>:"; objects without it (or without
    # our metadata marker) are never changed or deleted. Distinct tags let meshes share a LiveKit.
    tag: str = Field(default="voiceai", pattern=r"^[a-z][a-z0-9-]{0,30}$")
    # Each inbound call gets its own room: "<room_prefix><tenant>-<random>".
    room_prefix: str = "call-"
    # Inbound trunks accept calls only from these carrier addresses/CIDRs (empty: any).
    sip_inbound_allowed_addresses: list[str] = []
    # The carrier's SIP host for outbound calls ("sip.carrier.example:5060"). Empty: outbound
    # calls are refused with FAILED_PRECONDITION. Each tenant gets its own outbound trunk on it,
    # listing only that tenant's numbers as caller ids.
    sip_outbound_address: str = ""
    sip_outbound_transport: Literal["auto", "udp", "tcp", "tls"] = "auto"
    sip_outbound_auth_username: str = ""
    sip_outbound_auth_password: SecretStr = SecretStr("")
    # Per LiveKit API request.
    request_timeout_s: float = Field(default=10.0, gt=0)
    # Reconcile LiveKit with the database at start and then this often (0: only at start).
    reconcile_interval_s: float = Field(default=300.0, ge=0)
    # How often an outbound call's progress is read from its room.
    call_poll_interval_s: float = Field(default=0.25, gt=0)

    @property
    def enabled(self) -> bool:
        return not self.missing()

    def missing(self) -> list[str]:
        values = (self.url, self.api_key, self.api_secret.get_secret_value())
        return [name for name, value in zip(CREDENTIAL_VARIABLES, values, strict=True) if not value]
