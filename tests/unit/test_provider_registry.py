"""One provider registry: each cloud provider declares its name, when it is configured and its
factory once, in its own module; every service's make_chain iterates its ``CLOUD`` specs."""

from __future__ import annotations

import pytest

import llm_svc.app
import llm_svc.providers
import stt_svc.app
import stt_svc.providers
import tts_svc.app
import tts_svc.providers
from common.providers import KNOWN_PROVIDERS, EnvKeySource, ProviderSpec, load_specs


@pytest.mark.parametrize(
    ("service", "paths"),
    [("stt", stt_svc.providers.CLOUD), ("llm", llm_svc.providers.CLOUD), ("tts", tts_svc.providers.CLOUD)],
)
def test_every_known_cloud_provider_is_declared_once(service: str, paths: tuple[str, ...]) -> None:
    specs = load_specs(paths)
    assert all(isinstance(s, ProviderSpec) for s in specs)
    names = [s.name for s in specs]
    assert sorted(names) == sorted(n for n in KNOWN_PROVIDERS[service] if n != "local")
    assert len(set(names)) == len(names)


def test_configured_by_url_or_any_key_and_built_with_the_injected_keys() -> None:
    (aura, eleven) = load_specs(tts_svc.providers.CLOUD)
    none = EnvKeySource({})
    tenant_only = EnvKeySource({"ELEVENLABS_API_KEY__ACME": "k"})
    settings = tts_svc.app.Settings()
    assert not aura.configured(settings, none) and not eleven.configured(settings, none)
    assert eleven.configured(settings, tenant_only) and not aura.configured(settings, tenant_only)
    assert aura.configured(tts_svc.app.Settings(tts_deepgram_url="ws://gpu:8080"), none)
    (openai,) = load_specs(llm_svc.providers.CLOUD)
    assert openai.configured(llm_svc.app.Settings(openai_base_url="http://vllm:8000/v1"), none)
    (deepgram,) = load_specs(stt_svc.providers.CLOUD)
    assert deepgram.configured(stt_svc.app.Settings(), EnvKeySource({"DEEPGRAM_API_KEY": "k"}))


def test_load_specs_refuses_what_is_not_a_spec() -> None:
    with pytest.raises(TypeError, match="not a ProviderSpec"):
        load_specs(["stt_svc.providers:REGISTRY"])
