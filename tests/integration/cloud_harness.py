"""The whole mesh on cloud providers, on loopback: the real stt_svc, llm_svc and tts_svc (their
own app factories and provider chains) pointed at the protocol doubles of Deepgram (listen and
speak), OpenAI and ElevenLabs, and the real gateway in front of them with tenancy.

The local links are light stand-ins so no model loads: ``ToneWordsRecognizer`` hears the same
tone words as the listen double, ``TextCodedLocal`` speaks the same text-coded audio as the TTS
doubles (so a caller can read back whichever engine spoke), and llm_svc's own offline responder.
Keys come from ``environ`` (a dict the test may change while the mesh runs: keys are resolved per
request), never from the process environment.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from common.discovery import StaticResolver
from common.redis_conn import RedisSettings
from common.settings import DiscoverySettings
from gateway.app import GatewayApp
from gateway.app import Settings as GatewaySettings
from llm_svc import app as llm_app
from stt_svc import app as stt_app
from tests.conftest import running
from tests.doubles.deepgram_api import DeepgramListenDouble, ToneWordsRecognizer
from tests.doubles.deepgram_speak import DeepgramSpeakDouble, text_audio
from tests.doubles.elevenlabs_api import ElevenLabsDouble
from tests.doubles.openai_api import OpenAIDouble
from tts_svc import app as tts_app
from tts_svc.providers.base import SynthesisOptions

LOCAL_TTS_RATE = 16000


class TextCodedLocal:
    """tts_svc's "local" link here: the doubles' text-coded audio, at once (no Piper model)."""

    name = "text-coded-local"
    sample_rate = LOCAL_TTS_RATE
    voices = ("local",)

    def __init__(self) -> None:
        self.texts: list[str] = []

    async def synthesize(self, text: str, options: SynthesisOptions) -> bytes:
        self.texts.append(text)
        return text_audio(text, LOCAL_TTS_RATE)


@dataclass
class CloudDoubles:
    """The providers' doubles: what each received, its faults, its open connections."""

    listen: DeepgramListenDouble
    speak: DeepgramSpeakDouble
    elevenlabs: ElevenLabsDouble
    openai: OpenAIDouble


@contextlib.asynccontextmanager
async def cloud_doubles() -> AsyncIterator[CloudDoubles]:
    async with (
        DeepgramListenDouble() as listen,
        DeepgramSpeakDouble() as speak,
        ElevenLabsDouble() as elevenlabs,
        OpenAIDouble() as openai,
    ):
        yield CloudDoubles(listen, speak, elevenlabs, openai)


@dataclass
class CloudMesh(CloudDoubles):
    """The doubles, the local stand-ins, and the gateway's address."""

    local_stt: ToneWordsRecognizer
    local_tts: TextCodedLocal
    address: str


@contextlib.asynccontextmanager
async def cloud_mesh(
    environ: dict[str, str],
    *,
    tenant_address: str,
    redis_url: str,
    doubles: CloudDoubles | None = None,
    stt: dict[str, Any] | None = None,
    llm: dict[str, Any] | None = None,
    tts: dict[str, Any] | None = None,
) -> AsyncIterator[CloudMesh]:
    """``doubles``: the test's own, to look at them after the services stopped (else fresh ones).
    ``stt``/``llm``/``tts``: extra settings of each service (deadlines, caps)."""
    if doubles is None:
        async with (
            cloud_doubles() as own,
            cloud_mesh(
                environ,
                tenant_address=tenant_address,
                redis_url=redis_url,
                doubles=own,
                stt=stt,
                llm=llm,
                tts=tts,
            ) as mesh,
        ):
            yield mesh
        return
    d = doubles
    local_stt, local_tts = ToneWordsRecognizer(), TextCodedLocal()
    stt_settings = stt_app.Settings(stt_deepgram_urls=d.listen.url, **(stt or {}))
    stt_host = stt_app.build_host(stt_settings, stt_app.make_chain(stt_settings, local_stt, environ))
    llm_settings = llm_app.Settings(openai_base_url=d.openai.base_url, **(llm or {}))
    llm_host = llm_app.build_host(llm_settings, environ=environ)
    tts_settings = tts_app.Settings(
        tts_deepgram_url=d.speak.url, tts_elevenlabs_url=d.elevenlabs.url, **(tts or {})
    )
    tts_host = tts_app.build_host(tts_settings, tts_app.make_chain(tts_settings, local_tts, environ))
    async with running(stt_host) as stt_addr, running(llm_host) as llm_addr, running(tts_host) as tts_addr:
        resolver = StaticResolver(
            {"stt": [stt_addr], "llm": [llm_addr], "tts": [tts_addr], "tenant": [tenant_address]}
        )
        # As tests.integration.gateway_harness builds it, but on the real services.
        gateway = GatewayApp(
            GatewaySettings(grace_period_s=1.0),
            resolver,
            discovery=DiscoverySettings(tenant_addresses=tenant_address),
            redis_settings=RedisSettings(url=redis_url),
        )
        port = await gateway.start()
        try:
            yield CloudMesh(
                d.listen, d.speak, d.elevenlabs, d.openai, local_stt, local_tts, f"127.0.0.1:{port}"
            )
        finally:
            await gateway.drain(0.5)
