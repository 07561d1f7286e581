"""Audio between a LiveKit room (``rtc.AudioFrame``s) and the pipeline (20 ms LINEAR16).

A room call asks LiveKit for the pipeline's rate both ways (``room.py``): ``rtc.AudioStream``
resamples the caller's 48 kHz track natively and hands over 20 ms frames at 16 kHz, and
``rtc.AudioSource`` takes the agent's 16 kHz frames and resamples them natively for the track.
Then ``room_rate == pipeline_rate`` here and no resampling happens in this process's Python
side at all: caller frames pass through (checked and sliced), agent frames are wrapped.

At any other room rate (48 kHz frames handed in, as tests and older callers do) both directions
use LiveKit's own sox resampler (``rtc.AudioResampler``), which keeps its filter state across
pushes, so frame boundaries leave no clicks. It hands back audio in the chunks its filter
releases, not per input frame; ``FrameSlicer`` cuts those into exact 20 ms frames.
"""

from __future__ import annotations

from livekit import rtc

from common.audio import FrameSlicer

ROOM_RATE = 48_000  # what WebRTC (Opus) and LiveKit SIP deliver and expect
PIPELINE_RATE = 16_000  # what the recognizer and synthesizer run at
FRAME_MS = 20
_QUALITY = rtc.AudioResamplerQuality.MEDIUM


def _pcm(frame: rtc.AudioFrame) -> bytes:
    # A view of the frame's samples as bytes, no copy: FrameSlicer only appends it.
    return frame.data.cast("B")  # type: ignore[return-value]


def frame_bytes(rate: int) -> int:
    """Bytes in one 20 ms mono LINEAR16 frame at ``rate``."""
    return rate * FRAME_MS // 1000 * 2


class CallerAudioIn:
    """The caller's room frames -> 20 ms LINEAR16 frames at the pipeline rate."""

    __slots__ = ("_out_rate", "_resampler", "_slicer")

    def __init__(self, room_rate: int = ROOM_RATE, pipeline_rate: int = PIPELINE_RATE) -> None:
        self._out_rate = pipeline_rate
        self._resampler = (
            rtc.AudioResampler(room_rate, pipeline_rate, num_channels=1, quality=_QUALITY)
            if room_rate != pipeline_rate
            else None
        )
        self._slicer = FrameSlicer(frame_bytes(pipeline_rate))

    def push(self, frame: rtc.AudioFrame) -> list[bytes]:
        """One room frame (any length) -> the whole 20 ms pipeline frames it completes."""
        if frame.num_channels != 1:
            raise ValueError(f"caller audio must be mono; got {frame.num_channels} channels")
        if self._resampler is None:
            return self._slicer.push(_pcm(frame))
        out: list[bytes] = []
        for chunk in self._resampler.push(frame):
            out.extend(self._slicer.push(_pcm(chunk)))
        return out


class AgentAudioOut:
    """The agent's 20 ms pipeline frames -> 20 ms 48 kHz ``rtc.AudioFrame``s for the room."""

    __slots__ = ("_in_rate", "_out_rate", "_resampler", "_slicer")

    def __init__(self, pipeline_rate: int = PIPELINE_RATE, room_rate: int = ROOM_RATE) -> None:
        self._in_rate = pipeline_rate
        self._out_rate = room_rate
        self._resampler = self._new_resampler()
        self._slicer = FrameSlicer(frame_bytes(room_rate))

    def _new_resampler(self) -> rtc.AudioResampler | None:
        if self._in_rate == self._out_rate:
            return None  # LiveKit's AudioSource resamples natively
        return rtc.AudioResampler(self._in_rate, self._out_rate, num_channels=1, quality=_QUALITY)

    def push(self, pcm: bytes) -> list[rtc.AudioFrame]:
        """Pipeline audio -> the whole 20 ms room frames it completes."""
        if self._resampler is None:
            return [self._frame(data) for data in self._slicer.push(pcm)]
        out: list[rtc.AudioFrame] = []
        for chunk in self._resampler.push(bytearray(pcm)):
            for data in self._slicer.push(_pcm(chunk)):
                out.append(self._frame(data))
        return out

    def flush(self) -> list[rtc.AudioFrame]:
        """What the filter still holds, the last frame padded with silence (end of speech)."""
        held = self._resampler.flush() if self._resampler is not None else []
        out = [self._frame(data) for chunk in held for data in self._slicer.push(_pcm(chunk))]
        last = self._slicer.flush()
        if last is not None:
            out.append(self._frame(last))
        self._resampler = self._new_resampler()  # a flushed sox resampler takes no more input
        return out

    def reset(self) -> None:
        """Barge-in: drop what the filter holds, so no stale tail plays before the next reply."""
        self._resampler = self._new_resampler()
        self._slicer.clear()

    def _frame(self, data: bytes) -> rtc.AudioFrame:
        return rtc.AudioFrame(data, self._out_rate, 1, len(data) // 2)
