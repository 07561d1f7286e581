"""AudioClock maps audio offsets to arrival times; EnergyVad tells voice from silence."""

from __future__ import annotations

import numpy as np

from common.audio import LINEAR16, MULAW, Format, pcm16_to_mulaw
from gateway.session.clock import AudioClock, EnergyVad

F16 = Format(LINEAR16, 16000)


def test_clock_maps_offsets_to_arrival() -> None:
    clock = AudioClock(F16, window_s=2)
    for i in range(150):  # 3 s of 20 ms frames, arriving at t = 100 + i*0.02
        clock.on_audio(640, 100.0 + i * 0.02)
    # Audio up to 2500 ms is frames 0..124: frame 124 (2480-2500 ms) arrived at 100 + 124*0.02.
    assert clock.arrival(2500) == 100.0 + 124 * 0.02
    assert clock.arrival(2481) == 100.0 + 124 * 0.02
    assert clock.arrival(2480) == 100.0 + 123 * 0.02
    assert abs(clock.arrival(9999) - (100.0 + 149 * 0.02)) < 0.021  # clamped to what arrived
    assert clock.arrival(0) >= 100.0 + 49 * 0.02  # older than the window: the oldest kept


def _tone(ms: int, amp: int) -> bytes:
    t = np.arange(16 * ms) / 16000
    return (amp * np.sin(2 * np.pi * 300 * t)).astype(np.int16).tobytes()


def test_energy_vad() -> None:
    vad = EnergyVad(F16)
    assert not vad.on_audio(b"\x00" * 640, 1.0)
    assert vad.on_audio(_tone(20, 6000), 1.02)
    assert vad.last_voice_at == 1.02
    assert not vad.on_audio(_tone(20, 50), 1.04)
    mu = EnergyVad(Format(MULAW, 8000))
    assert mu.on_audio(pcm16_to_mulaw(_tone(20, 6000)[:320]), 2.0)
