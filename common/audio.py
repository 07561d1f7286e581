"""Audio helpers for the hot path: G.711 codecs, resampling, fixed-size framing.

All codecs are table lookups over numpy arrays (built once at import), so per-frame work is a
couple of vectorised operations and no Python loops. PCM is always signed 16-bit little-endian.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import soxr

from common.errors import InvalidArgument
from common.gen.voiceai.common.v1 import audio_pb2

LINEAR16 = audio_pb2.AUDIO_ENCODING_LINEAR16
MULAW = audio_pb2.AUDIO_ENCODING_MULAW
ALAW = audio_pb2.AUDIO_ENCODING_ALAW

ENCODING_NAMES: dict[int, str] = {LINEAR16: "LINEAR16", MULAW: "MULAW", ALAW: "ALAW"}

# ---------------------------------------------------------------------------- G.711 (ITU-T)

_MU_BIAS = 0x84
_MU_CLIP14 = 8159
_MU_SEG_END = (0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF)


def _segment(x: np.ndarray, bounds: tuple[int, ...]) -> np.ndarray:
    """Index of the first bound >= x (len(bounds) when above all)."""
    return np.searchsorted(np.asarray(bounds), x, side="left").astype(np.int32)


def _mulaw_encode_array(pcm: np.ndarray) -> np.ndarray:
    # 14-bit magnitude with a bias of 0x21, as in the ITU reference and CPython's audioop.
    x = pcm.astype(np.int32) >> 2
    mask = np.where(x < 0, 0x7F, 0xFF)
    x = np.minimum(np.where(x < 0, -x, x), _MU_CLIP14) + 0x21
    seg = _segment(x, _MU_SEG_END)
    uval = (seg << 4) | ((x >> (seg + 1)) & 0x0F)
    uval = np.where(seg >= 8, 0x7F, uval)
    return ((uval ^ mask) & 0xFF).astype(np.uint8)


def _mulaw_decode_array(codes: np.ndarray) -> np.ndarray:
    u = ~codes.astype(np.int32) & 0xFF
    exponent = (u >> 4) & 0x07
    mantissa = u & 0x0F
    magnitude = (((mantissa << 3) + _MU_BIAS) << exponent) - _MU_BIAS
    return np.where(u & 0x80, -magnitude, magnitude).astype(np.int16)


def _alaw_encode_array(pcm: np.ndarray) -> np.ndarray:
    x = pcm.astype(np.int32) >> 3
    mask = np.where(x >= 0, 0xD5, 0x55)
    x = np.where(x >= 0, x, -x - 1)
    seg = _segment(x, (0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF))
    shifted = np.where(seg < 2, x >> 1, x >> np.maximum(seg, 1))
    aval = (seg << 4) | (shifted & 0x0F)
    aval = np.where(seg >= 8, 0x7F, aval)
    return ((aval ^ mask) & 0xFF).astype(np.uint8)


def _alaw_decode_array(codes: np.ndarray) -> np.ndarray:
    a = codes.astype(np.int32) ^ 0x55
    t = (a & 0x0F) << 4
    seg = (a & 0x70) >> 4
    t = np.where(seg == 0, t + 8, t + 0x108)
    t = np.where(seg > 1, t << np.maximum(seg - 1, 0), t)
    return np.where(a & 0x80, t, -t).astype(np.int16)


_ALL_PCM = np.arange(-32768, 32768, dtype=np.int32).astype(np.int16)
_ALL_CODES = np.arange(256, dtype=np.uint8)
# Encode tables are indexed by the int16 sample reinterpreted as uint16.
_MULAW_ENC = np.empty(65536, dtype=np.uint8)
_MULAW_ENC[_ALL_PCM.view(np.uint16)] = _mulaw_encode_array(_ALL_PCM)
_ALAW_ENC = np.empty(65536, dtype=np.uint8)
_ALAW_ENC[_ALL_PCM.view(np.uint16)] = _alaw_encode_array(_ALL_PCM)
_MULAW_DEC = _mulaw_decode_array(_ALL_CODES)
_ALAW_DEC = _alaw_decode_array(_ALL_CODES)


def pcm16_to_mulaw(pcm: bytes) -> bytes:
    """Linear PCM16 to G.711 mu-law (table lookup)."""
    return _MULAW_ENC[np.frombuffer(pcm, dtype=np.uint16)].tobytes()


def mulaw_to_pcm16(data: bytes) -> bytes:
    """G.711 mu-law to linear PCM16 (table lookup)."""
    return _MULAW_DEC[np.frombuffer(data, dtype=np.uint8)].tobytes()


def pcm16_to_alaw(pcm: bytes) -> bytes:
    """Linear PCM16 to G.711 A-law (table lookup)."""
    return _ALAW_ENC[np.frombuffer(pcm, dtype=np.uint16)].tobytes()


def alaw_to_pcm16(data: bytes) -> bytes:
    """G.711 A-law to linear PCM16 (table lookup)."""
    return _ALAW_DEC[np.frombuffer(data, dtype=np.uint8)].tobytes()


# ---------------------------------------------------------------------------- formats


@dataclass(frozen=True, slots=True)
class Format:
    """A validated audio format: encoding, rate, mono."""

    encoding: int
    sample_rate: int

    @property
    def bytes_per_sample(self) -> int:
        return 2 if self.encoding == LINEAR16 else 1

    def bytes_for_ms(self, ms: int) -> int:
        return self.sample_rate * ms // 1000 * self.bytes_per_sample

    def ms_for_bytes(self, n: int) -> float:
        return n * 1000.0 / (self.sample_rate * self.bytes_per_sample)

    def to_proto(self) -> audio_pb2.AudioFormat:
        return audio_pb2.AudioFormat(encoding=self.encoding, sample_rate_hertz=self.sample_rate, channels=1)  # type: ignore[arg-type]

    def describe(self) -> str:
        return f"{ENCODING_NAMES.get(self.encoding, '?')}/{self.sample_rate}Hz"


def validate_format(
    proto: audio_pb2.AudioFormat,
    *,
    field: str,
    rates: Mapping[int, frozenset[int]],
) -> Format:
    """Check ``proto`` against the (encoding -> allowed rates) the caller supports."""
    encoding = proto.encoding
    if encoding not in rates:
        allowed = ", ".join(ENCODING_NAMES[e] for e in rates)
        raise InvalidArgument(
            f"{field}.encoding {ENCODING_NAMES.get(encoding, encoding)} is not supported;"
            f" use one of: {allowed}"
        )
    rate = proto.sample_rate_hertz
    if rate not in rates[encoding]:
        allowed = ", ".join(str(r) for r in sorted(rates[encoding]))
        raise InvalidArgument(
            f"{field}.sample_rate_hertz {rate} is not supported for {ENCODING_NAMES[encoding]};"
            f" use one of: {allowed}"
        )
    if proto.channels not in (0, 1):
        raise InvalidArgument(f"{field}.channels must be 1 (mono); got {proto.channels}")
    return Format(encoding=encoding, sample_rate=rate)


# ---------------------------------------------------------------------------- conversion


class Resampler:
    """Streaming PCM16 resampler (soxr); keeps filter state across chunks."""

    __slots__ = ("_stream", "in_rate", "out_rate")

    def __init__(self, in_rate: int, out_rate: int, quality: str = "HQ") -> None:
        self.in_rate = in_rate
        self.out_rate = out_rate
        self._stream = (
            None
            if in_rate == out_rate
            else soxr.ResampleStream(in_rate, out_rate, 1, dtype="int16", quality=quality)
        )

    def process(self, pcm: bytes, last: bool = False) -> bytes:
        if self._stream is None:
            return pcm
        samples = np.frombuffer(pcm, dtype=np.int16)
        return self._stream.resample_chunk(samples, last=last).tobytes()


def resample_once(pcm: bytes, in_rate: int, out_rate: int) -> bytes:
    """Resample a whole buffer (no streaming state)."""
    if in_rate == out_rate:
        return pcm
    samples = np.frombuffer(pcm, dtype=np.int16)
    return soxr.resample(samples, in_rate, out_rate, quality="HQ").astype(np.int16).tobytes()


class Decoder:
    """Wire audio in ``fmt`` -> PCM16 at ``out_rate``."""

    __slots__ = ("_resampler", "fmt")

    def __init__(self, fmt: Format, out_rate: int) -> None:
        self.fmt = fmt
        self._resampler = Resampler(fmt.sample_rate, out_rate)

    def decode(self, data: bytes) -> bytes:
        if self.fmt.encoding == MULAW:
            data = mulaw_to_pcm16(data)
        elif self.fmt.encoding == ALAW:
            data = alaw_to_pcm16(data)
        return self._resampler.process(data)


class Encoder:
    """PCM16 at ``in_rate`` -> wire audio in ``fmt``."""

    __slots__ = ("_resampler", "fmt")

    def __init__(self, in_rate: int, fmt: Format) -> None:
        self.fmt = fmt
        self._resampler = Resampler(in_rate, fmt.sample_rate)

    def encode(self, pcm: bytes, last: bool = False) -> bytes:
        pcm = self._resampler.process(pcm, last=last)
        if self.fmt.encoding == MULAW:
            return pcm16_to_mulaw(pcm)
        if self.fmt.encoding == ALAW:
            return pcm16_to_alaw(pcm)
        return pcm


class FrameSlicer:
    """Cuts a byte stream into fixed-size frames; keeps the remainder for the next push."""

    __slots__ = ("_buf", "frame_bytes")

    def __init__(self, frame_bytes: int) -> None:
        self.frame_bytes = frame_bytes
        self._buf = bytearray()

    def push(self, data: bytes) -> list[bytes]:
        self._buf += data
        n = len(self._buf) // self.frame_bytes
        if n == 0:
            return []
        size = self.frame_bytes
        frames = [bytes(self._buf[i * size : (i + 1) * size]) for i in range(n)]
        del self._buf[: n * size]
        return frames

    def flush(self, pad: bytes = b"\x00") -> bytes | None:
        """The partial last frame, padded to full size; None if nothing is left."""
        if not self._buf:
            return None
        frame = bytes(self._buf) + pad * (self.frame_bytes - len(self._buf))
        self._buf.clear()
        return frame

    def clear(self) -> None:
        self._buf.clear()

    def __len__(self) -> int:
        return len(self._buf)


def silence(fmt: Format, ms: int) -> bytes:
    """``ms`` of silence in ``fmt``."""
    n = fmt.sample_rate * ms // 1000
    if fmt.encoding == MULAW:
        return b"\xff" * n
    if fmt.encoding == ALAW:
        return b"\xd5" * n
    return b"\x00\x00" * n
