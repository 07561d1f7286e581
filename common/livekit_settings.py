"""LiveKit settings, one class for every process that talks to LiveKit (env-first, read once).

``LiveKitSettings`` (``VOICEAI_LIVEKIT_*``, plus LiveKit's own ``LIVEKIT_URL``/``LIVEKIT_API_KEY``/
``LIVEKIT_API_SECRET``) holds what tenant_svc's SIP provisioning and the gateway's worker each
read, including the agent name both must agree on. ``LiveKitCredentials`` is the credentials
alone, for the worker, which refuses to start without them (``require``). Secrets are
``SecretStr``: no repr or log line shows them.
"""

from __future__ import annotations

from typing import Literal

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

CREDENTIAL_VARIABLES = ("LIVEKIT_URL", "LIVEKIT_API_KEY", "LIVEKIT_API_SECRET")


class MissingCredential(ValueError):
    """A LiveKit credential is not configured; the message names the variable."""


class LiveKitCredentials(BaseSettings):
    """Where the LiveKit server is and the API key pair the worker registers with."""

    model_config = SettingsConfigDict(env_prefix="LIVEKIT_", extra="ignore")

    url: str = ""
    api_key: str = ""
    api_secret: SecretStr = SecretStr("")

    def require(self) -> LiveKitCredentials:
        """Self, or ``MissingCredential`` naming the first variable that is not set."""
        for env, value in (
            ("LIVEKIT_URL", self.url),
            ("LIVEKIT_API_KEY", self.api_key),
            ("LIVEKIT_API_SECRET", self.api_secret.get_secret_value()),
        ):
            if not value.strip():
                raise MissingCredential(
                    f"{env} is not set: the LiveKit worker needs LIVEKIT_URL (ws:// or wss://),"
                    " LIVEKIT_API_KEY and LIVEKIT_API_SECRET to register with a LiveKit server"
                )
        if not self.url.startswith(("ws://", "wss://", "http://", "https://")):
            raise MissingCredential(
                f"LIVEKIT_URL must be a ws://, wss://, http:// or https:// URL; got {self.url!r}"
            )
        return self


class LiveKitSettings(BaseSettings):
    """LiveKit server API credentials (LiveKit's own variable names), SIP provisioning choices
    (tenant_svc) and the worker's knobs (gateway).

    Provisioning is on only when all three of ``LIVEKIT_URL``, ``LIVEKIT_API_KEY`` and
    ``LIVEKIT_API_SECRET`` are set; the secret is a SecretStr and never printed.
    """

    model_config = SettingsConfigDict(env_prefix="VOICEAI_LIVEKIT_", extra="ignore", populate_by_name=True)

    url: str = Field(default="", validation_alias=AliasChoices("url", "LIVEKIT_URL"))
    api_key: str = Field(default="", validation_alias=AliasChoices("api_key", "LIVEKIT_API_KEY"))
    api_secret: SecretStr = Field(
        default=SecretStr(""), validation_alias=AliasChoices("api_secret", "LIVEKIT_API_SECRET")
    )
    # The agent name the gateway's LiveKit worker registers with (explicit dispatch): tenant_svc's
    # dispatch rules and outbound calls dispatch this name, with metadata naming tenant, agent and
    # number. One field for both processes, so the two sides cannot disagree.
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

    # ---- the gateway worker (python -m gateway.livekit)
    # Calls this worker runs at once; its load reported to LiveKit is active calls / max_calls,
    # and it takes no new job at 1.0.
    max_calls: int = 50
    # After SIGTERM: how long running calls may go on before they are cut.
    drain_timeout_s: int = 600
    # Health endpoint of the worker (LiveKit's /, /worker): all interfaces by default (probes);
    # port 0 picks a free one.
    http_host: str = ""
    http_port: int = 8081
    # How long to wait for the caller to join the room after the job starts.
    participant_timeout_s: float = 30.0
    # Spoken (with the default voice) before hanging up on a call no agent answers.
    unknown_number_message: str = "Sorry, this number is not in service. Goodbye."
    # The tenant id the refusal message is synthesized under: it belongs to no customer.
    system_tenant: str = "voiceai-system"
    # The digit that asks for a human when the agent has a transfer number.
    transfer_digit: str = "0"
    # Said (in the agent's voice) before the caller is transferred, and when a transfer fails
    # (the call then goes on with the agent).
    transfer_phrase: str = "Transferring you now."
    transfer_failed_phrase: str = "Sorry, I couldn't put you through right now. How else can I help?"
    # Agent audio the room's audio source may hold ahead of real time (barge-in drops it).
    playout_buffer_ms: int = 100

    @property
    def enabled(self) -> bool:
        return not self.missing()

    def missing(self) -> list[str]:
        values = (self.url, self.api_key, self.api_secret.get_secret_value())
        return [name for name, value in zip(CREDENTIAL_VARIABLES, values, strict=True) if not value]
