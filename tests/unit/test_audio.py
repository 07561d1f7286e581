"""Audio helpers: G.711 against the ITU reference (CPython's audioop where it exists) and known
values, resampling, framing, and format validation messages."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from common import audio
from common.errors import InvalidArgument
from common.gen.voiceai.common.v1 import audio_pb2

ALL = np.arange(-32768, 32768, dtype=np.int32).astype(np.int16).tobytes()


def test_g711_matches_audioop_bit_for_bit() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        audioop = pytest.importorskip("audioop")
    assert audio.pcm16_to_mulaw(ALL) == audioop.lin2ulaw(ALL, 2)
    assert audio.pcm16_to_alaw(ALL) == audioop.lin2alaw(ALL, 2)
    codes = bytes(range(256))
    assert audio.mulaw_to_pcm16(codes) == audioop.ulaw2lin(codes, 2)
    assert audio.alaw_to_pcm16(codes) == audioop.alaw2lin(codes, 2)


@pytest.mark.parametrize(
    ("sample", "mulaw", "alaw"),
    [(0, 0xFF, 0xD5), (-1, 0x7E, 0x55), (32767, 0x80, 0xAA), (-32768, 0x00, 0x2A), (1000, 0xCE, 0xFA)],
)
def test_g711_reference_values(sample: int, mulaw: int, alaw: int) -> None:
    pcm = np.array([sample], dtype=np.int16).tobytes()
    assert audio.pcm16_to_mulaw(pcm)[0] == mulaw
    assert audio.pcm16_to_alaw(pcm)[0] == alaw


def test_g711_round_trip_error_is_small() -> None:
    x = np.frombuffer(ALL, dtype=np.int16).astype(np.int64)
    for enc, dec in (
        (audio.pcm16_to_mulaw, audio.mulaw_to_pcm16),
        (audio.pcm16_to_alaw, audio.alaw_to_pcm16),
    ):
        y = np.frombuffer(dec(enc(ALL)), dtype=np.int16).astype(np.int64)
        assert np.max(np.abs(y - x) / np.maximum(np.abs(x), 256)) < 0.07


def _peak_hz(pcm: bytes, rate: int) -> float:
    x = np.frombuffer(pcm, dtype=np.int16).astype(np.float64)
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spectrum) * rate / len(x))


def test_streaming_resampler_keeps_a_tone() -> None:
    t = np.arange(8000) / 8000
    tone = (8000 * np.sin(2 * np.pi * 1000 * t)).astype(np.int16).tobytes()
    up = audio.Resampler(8000, 16000)
    out16 = b"".join(up.process(tone[i : i + 320]) for i in range(0, len(tone), 320)) + up.process(
        b"", last=True
    )
    assert abs(len(out16) - 2 * len(tone)) <= 64
    assert abs(_peak_hz(out16, 16000) - 1000) < 5
    out48 = audio.resample_once(out16, 16000, 48000)
    assert abs(_peak_hz(out48, 48000) - 1000) < 5
    assert audio.Resampler(16000, 16000).process(b"ab") == b"ab"


def test_frame_slicer_keeps_the_remainder() -> None:
    s = audio.FrameSlicer(4)
    assert s.push(b"abcdef") == [b"abcd"]
    assert len(s) == 2
    assert s.push(b"ghij") == [b"efgh"]
    assert s.flush() == b"ij\x00\x00"
    assert s.flush() is None


def test_validate_format_names_the_field_and_the_choices() -> None:
    rates = {audio.LINEAR16: frozenset({8000, 16000}), audio.MULAW: frozenset({8000})}
    ok = audio.validate_format(
        audio_pb2.AudioFormat(encoding=1, sample_rate_hertz=16000), field="cfg.fmt", rates=rates
    )
    assert ok == audio.Format(audio.LINEAR16, 16000) and ok.bytes_for_ms(20) == 640
    with pytest.raises(InvalidArgument, match=r"cfg\.fmt\.sample_rate_hertz 44100 .* 8000, 16000"):
        audio.validate_format(
            audio_pb2.AudioFormat(encoding=1, sample_rate_hertz=44100), field="cfg.fmt", rates=rates
        )
    with pytest.raises(
        InvalidArgument, match=r"cfg\.fmt\.encoding ALAW is not supported; use one of: LINEAR16, MULAW"
    ):
        audio.validate_format(
            audio_pb2.AudioFormat(encoding=3, sample_rate_hertz=8000), field="cfg.fmt", rates=rates
        )
    with pytest.raises(InvalidArgument, match="mono"):
        audio.validate_format(
            audio_pb2.AudioFormat(encoding=1, sample_rate_hertz=8000, channels=2), field="f", rates=rates
        )
