"""Zero-cost Synthesizer for benchmarks: fixed first-audio latency, precomputed audio."""

from __future__ import annotations

import asyncio
import os

import numpy as np

from tts_svc.providers.base import SynthesisOptions

RATE = 16000
MS_PER_CHAR = 30
_TONE = (1500 * np.sin(2 * np.pi * 200 * np.arange(RATE * 20) / RATE)).astype(np.int16).tobytes()


class ZeroCostSynthesizer:
    """Audio of ``VOICEAI_FAKE_TTS_MS_PER_CHAR`` (default ``MS_PER_CHAR``) per character, sliced
    from one precomputed 20 s buffer."""

    name = "zero-cost-fake"
    sample_rate = RATE
    voices = ("fake",)

    def __init__(self) -> None:
        self._first_audio_s = int(os.environ.get("VOICEAI_FAKE_TTS_FIRST_AUDIO_MS", "50")) / 1000.0
        self._ms_per_char = int(os.environ.get("VOICEAI_FAKE_TTS_MS_PER_CHAR", str(MS_PER_CHAR)))

    async def synthesize(self, text: str, options: SynthesisOptions) -> bytes:
        if self._first_audio_s:
            await asyncio.sleep(self._first_audio_s)
        n = min(len(_TONE), RATE * 2 * self._ms_per_char * len(text) // 1000)
        return _TONE[: n - n % 2]
