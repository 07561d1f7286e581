"""LiveKit worker settings: the server's credentials (LIVEKIT_*) and the worker's knobs (VOICEAI_LIVEKIT_*).

The credentials keep LiveKit's own variable names, so one set of variables serves this worker,
the ``lk`` CLI and LiveKit's SIP service alike. A missing one stops the worker at start with a
message naming it; the secret is a ``SecretStr`` so no repr or log line ever shows it.
"""

from __future__ import annotations

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


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
    """How the worker takes jobs and what it tells callers it cannot serve."""

    model_config = SettingsConfigDict(env_prefix="VOICEAI_LIVEKIT_", extra="ignore")

    # Explicit dispatch name: rooms get this worker through a dispatch rule or the API (what
    # tenant_svc's LiveKit SIP provisioning names); empty takes every room of the project.
    agent_name: str = "voiceai-gateway"
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
