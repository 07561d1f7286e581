"""Env-first configuration shared by every service (pydantic-settings).

Each service declares one settings class derived from ``ServiceSettings``; it is read once in
``__main__`` and passed down. No other module reads the environment.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServiceSettings(BaseSettings):
    """Settings every gRPC service has: where it listens and how it drains and logs."""

    model_config = SettingsConfigDict(env_prefix="VOICEAI_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = 0
    # Prometheus /metrics on this port; 0 picks a free port, -1 disables it.
    metrics_port: int = -1
    # SO_REUSEPORT on the gRPC port: several processes of one service share it (gateway --workers).
    reuse_port: bool = False
    # When set, /metrics listens on the gRPC port plus this offset (one setting for a whole local
    # mesh, whose processes get different gRPC ports: make observe).
    metrics_port_offset: int = 0
    # How long open streams may run after SIGTERM before they are cancelled.
    grace_period_s: float = 30.0
    # On drain, report NOT_SERVING this long before refusing new RPCs, so load balancers and
    # probes see it while the server still answers.
    drain_notice_s: float = 0.0
    max_message_bytes: int = 4 * 1024 * 1024
    log_level: str = "INFO"
    # "console" for people, "json" for log pipelines.
    log_format: str = "console"
    # Threads for CPU-bound engine work (model inference); 0 = one per core.
    engine_threads: int = 0
    # Installs uvloop as the event loop when available.
    use_uvloop: bool = True
    # sys.setswitchinterval: how long a thread may hold the GIL when another wants it.
    gil_switch_interval_s: float = 0.0005
    # A full GC (all generations) at most once per this many second-generation collections
    # (CPython's default is 10). Its pause grows with the live heap.
    gc_full_collection_every: int = 10


class DiscoverySettings(BaseSettings):
    """Where the services are. Static addresses now; Consul plugs in behind the same resolver."""

    model_config = SettingsConfigDict(env_prefix="VOICEAI_", extra="ignore")

    # Comma-separated host:port lists per service.
    stt_addresses: str = Field(default="127.0.0.1:50061")
    llm_addresses: str = Field(default="127.0.0.1:50062")
    tts_addresses: str = Field(default="127.0.0.1:50063")
    # tenant_svc: empty = no tenancy service (the gateway then serves built-in/inline agents only).
    tenant_addresses: str = Field(default="")

    def static_map(self) -> dict[str, list[str]]:
        def split(value: str) -> list[str]:
            return [a.strip() for a in value.split(",") if a.strip()]

        return {
            "stt": split(self.stt_addresses),
            "llm": split(self.llm_addresses),
            "tts": split(self.tts_addresses),
            "tenant": split(self.tenant_addresses),
        }


def environment() -> Mapping[str, str]:
    """The process environment, for what no settings class can declare: provider keys named
    per tenant (``DEEPGRAM_API_KEY__<TENANT>``), read by ``EnvKeySource``."""
    return os.environ
