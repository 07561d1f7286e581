"""The provider key seam: EnvKeySource (the default), the KeyHint a chain uses to skip keyless
providers, and a custom KeySource (a BYOK store) injected into a provider."""

from __future__ import annotations

from common.providers import EnvKeySource, KeyHint, KeySource, ProviderKey, provider_key
from tts_svc.providers.elevenlabs_tts import ElevenLabsTts

ENV = {"DEEPGRAM_API_KEY": "shared", "DEEPGRAM_API_KEY__ACME": "acme-own", "OPENAI_API_KEY": " "}


async def test_env_key_source_tenant_first_then_default() -> None:
    keys = EnvKeySource(ENV)
    own = await keys.key_for("DEEPGRAM_API_KEY", "acme")
    shared = await keys.key_for("DEEPGRAM_API_KEY", "globex")
    assert own is not None and (own.value, own.label) == ("acme-own", "tenant")
    assert shared is not None and (shared.value, shared.label) == ("shared", "default")
    assert await keys.key_for("OPENAI_API_KEY", "acme") is None  # blank is not a key
    assert keys.has_any("DEEPGRAM_API_KEY") and not keys.has_any("OPENAI_API_KEY")
    assert not EnvKeySource({"DEEPGRAM_API_KEY__ACME": "x"}).may_have_key("DEEPGRAM_API_KEY", "globex")
    assert isinstance(keys, KeyHint)


def test_provider_key_base_url_and_secret_hidden() -> None:
    key = provider_key("sk-secret", "tenant", base_url="https://acme.openai.azure.com")
    assert key.base_url == "https://acme.openai.azure.com" and "sk-secret" not in repr(key)
    assert provider_key("sk-secret", "default").fingerprint == key.fingerprint


class _TenantStore:
    """A BYOK-style source: async, no hint (it cannot tell without a lookup)."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, str]] = []

    async def key_for(self, env_name: str, tenant_id: str) -> ProviderKey | None:
        self.asked.append((env_name, tenant_id))
        return provider_key("byok", "tenant") if tenant_id == "acme" else None


async def test_an_injected_key_source_is_what_the_provider_asks() -> None:
    store = _TenantStore()
    source: KeySource = store
    provider = ElevenLabsTts(keys=source)
    assert provider.serves("anyone")  # no hint: asked per stream, a missing key falls back
    key = await provider.key("acme")
    assert key is not None and key.value == "byok"
    assert await provider.key("globex") is None
    assert store.asked == [("ELEVENLABS_API_KEY", "acme"), ("ELEVENLABS_API_KEY", "globex")]
    hinted = ElevenLabsTts(keys=EnvKeySource({}))
    assert not hinted.serves("acme")
    await provider.aclose()
    await hinted.aclose()
