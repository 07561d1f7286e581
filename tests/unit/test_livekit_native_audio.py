"""The room path at the pipeline's rate: LiveKit's own (native) resampling both ways, nothing
resampled in Python. Real ``livekit.rtc`` objects through the FFI, without a server: a local
track carries an ``AudioSource``'s audio to an ``AudioStream``, as a room's track would."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import numpy as np
from livekit import rtc

from gateway.livekit.room import NATIVE_RATE
from gateway.livekit.transport import RoomTransport
from gateway.session.events import CallerAudio
from tests.unit.test_livekit_transport import RecordingSink, peak_hz, tone

ROOM = 48_000


async def _track_frames(source: rtc.AudioSource, rate: int, count: int) -> AsyncIterator[rtc.AudioFrame]:
    """``count`` 20 ms frames at ``rate`` of what ``source`` plays, read through LiveKit's AudioStream."""
    track = rtc.LocalAudioTrack.create_audio_track("caller", source)
    stream = rtc.AudioStream(track, sample_rate=rate, num_channels=1, frame_size_ms=20)
    try:
        seen = 0
        async for event in stream:
            yield event.frame
            seen += 1
            if seen == count:
                return
    finally:
        await stream.aclose()


async def _play(source: rtc.AudioSource, samples: np.ndarray, rate: int) -> None:
    per = rate // 50
    for i in range(0, len(samples) - per + 1, per):
        await source.capture_frame(rtc.AudioFrame(samples[i : i + per].tobytes(), rate, 1, per))


async def test_caller_frames_are_bit_for_bit_what_livekits_native_resampler_delivers() -> None:
    source = rtc.AudioSource(ROOM, 1, queue_size_ms=2000)
    transport = RoomTransport(RecordingSink(), room_rate=NATIVE_RATE)
    delivered: list[bytes] = []

    async def read() -> None:
        async for frame in _track_frames(source, NATIVE_RATE, 40):
            delivered.append(bytes(frame.data.cast("B")))
            transport.caller_frame(frame)

    async with asyncio.timeout(10):
        await asyncio.gather(read(), _play(source, tone(1000, 1000, ROOM), ROOM))
    transport.caller_left()
    pipeline = [
        e.data async for e in transport.inbound() if isinstance(e, CallerAudio)
    ]  # as the session reads

    assert {len(pcm) for pcm in delivered} == {640}  # LiveKit hands over 20 ms at 16 kHz
    assert pipeline == delivered  # the transport passes them on untouched: no Python resampling
    heard = np.frombuffer(b"".join(pipeline), dtype=np.int16)
    assert abs(peak_hz(heard[3200:], NATIVE_RATE) - 1000) < 10


async def test_agent_frames_go_to_the_source_untouched_and_play_on_the_track_at_48khz() -> None:
    source = rtc.AudioSource(NATIVE_RATE, 1, queue_size_ms=2000)
    sink = RecordingSink()
    transport = RoomTransport(sink, room_rate=NATIVE_RATE)
    agent = tone(440, 600, NATIVE_RATE).tobytes()
    for i in range(0, len(agent), 640):
        transport.send_audio(agent[i : i + 640])
    playback = asyncio.create_task(transport.run_playback())
    try:
        async with asyncio.timeout(5):
            await transport.wait_played()
    finally:
        playback.cancel()
    assert {(f.sample_rate, f.samples_per_channel) for f in sink.frames} == {(NATIVE_RATE, 320)}
    assert b"".join(bytes(f.data.cast("B")) for f in sink.frames) == agent  # no resampling, no padding

    # The room's AudioSource takes them at 16 kHz as they are; LiveKit resamples for the 48 kHz track.
    heard: list[np.ndarray] = []

    async def listen() -> None:
        async for frame in _track_frames(source, ROOM, 25):
            heard.append(np.frombuffer(frame.data, dtype=np.int16).copy())

    async def speak() -> None:
        for frame in sink.frames:
            await source.capture_frame(frame)

    async with asyncio.timeout(10):
        await asyncio.gather(listen(), speak())
    assert {len(h) for h in heard} == {960}
    assert abs(peak_hz(np.concatenate(heard)[4800:], ROOM) - 440) < 10
