"""The REST front's settings (env prefix ``VOICEAI_REST_``), read once in ``__main__``."""

from __future__ import annotations

from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_PORT = 8080


class RestSettings(BaseSettings):
    """Where the front listens, where tenant_svc is, and the limits it applies."""

    model_config = SettingsConfigDict(env_prefix="VOICEAI_REST_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    # tenant_svc's gRPC address (TenantService, TelephonyService and any later annotated service).
    tenant_address: str = "127.0.0.1:50064"
    # The gateway's gRPC address for the portal's "test this agent" calls; empty = off.
    gateway_address: str = ""
    # Request bodies above this are refused with 413 before they are read whole.
    max_body_bytes: int = 1024 * 1024
    # Comma-separated origins allowed to call the API from a browser; empty = same origin only.
    cors_origins: str = ""
    # Deadline of each unary RPC; server-streaming RPCs (an outbound call) get stream_timeout_s.
    rpc_timeout_s: float = 30.0
    stream_timeout_s: float = 3600.0
    # Set by the local launcher: stop when that process dies, however it dies (Linux).
    parent_pid: int = 0
    log_level: str = "INFO"
    log_format: str = "console"

    def cors_list(self) -> list[str]:
        """The allowed origins as a list."""
        return [o.strip() for o in self.cors_origins.split(",") if o.strip()]
