"""A client for a new tenant key must not load the CA bundle on the event loop: each fresh TLS
context costs tens of milliseconds of CPU, stalling every stream of the process. Providers load
it once, when they are built, and share it across their per-key clients."""

from __future__ import annotations

import ssl
from typing import Any

import pytest

from common.providers import EnvKeySource, resolve_key
from llm_svc.providers.openai_chat import OpenAIChat, OpenAIOptions
from tts_svc.providers.elevenlabs_tts import ElevenLabsTts

KEYS = {f"TENANT_{i}": f"key-{i}" for i in range(3)}


@pytest.fixture
def ca_loads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    loads: list[int] = []
    real = ssl.SSLContext.load_verify_locations

    def counting(self: ssl.SSLContext, *args: Any, **kwargs: Any) -> None:
        loads.append(1)
        real(self, *args, **kwargs)

    monkeypatch.setattr(ssl.SSLContext, "load_verify_locations", counting)
    return loads


async def test_openai_clients_for_new_keys_share_the_tls_context(ca_loads: list[int]) -> None:
    env = {f"OPENAI_API_KEY__{t}": k for t, k in KEYS.items()}
    provider = OpenAIChat(OpenAIOptions(), EnvKeySource(env))
    built = len(ca_loads)
    for tenant in KEYS:
        key = resolve_key("OPENAI_API_KEY", tenant, env)
        assert key is not None
        async with provider._clients.lease(key):
            pass
    assert len(provider._clients) == len(KEYS)
    assert len(ca_loads) == built  # no CA bundle loaded per key
    await provider.aclose()


async def test_elevenlabs_clients_for_new_keys_share_the_tls_context(ca_loads: list[int]) -> None:
    env = {f"ELEVENLABS_API_KEY__{t}": k for t, k in KEYS.items()}
    provider = ElevenLabsTts(keys=EnvKeySource(env))
    built = len(ca_loads)
    for tenant in KEYS:
        await provider.client(await provider.key(tenant))
    assert len(ca_loads) == built
    await provider.aclose()
