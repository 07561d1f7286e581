"""RoomTransport with real ``livekit.rtc`` frames and resamplers: 48 kHz room audio in, 20 ms
pipeline frames to the session; 20 ms pipeline frames out, 20 ms 48 kHz frames to the room."""

from __future__ import annotations

import asyncio

import numpy as np
from livekit import rtc

from gateway.livekit.audio import AgentAudioOut, CallerAudioIn
from gateway.livekit.transport import RoomTransport
from gateway.session.events import CallerAudio, CallerDtmf, CallerHangup, ClearAudio, TurnTimings


def tone(freq: float, ms: int, rate: int) -> np.ndarray:
    t = np.arange(rate * ms // 1000) / rate
    return (8000 * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def room_frames(samples: np.ndarray, per_frame: int = 480) -> list[rtc.AudioFrame]:
    """What a room delivers: 10 ms 48 kHz mono frames."""
    return [
        rtc.AudioFrame(samples[i : i + per_frame].tobytes(), 48000, 1, per_frame)
        for i in range(0, len(samples) - per_frame + 1, per_frame)
    ]


def peak_hz(pcm: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(pcm.astype(np.float64)))
    return float(np.fft.rfftfreq(len(pcm), 1 / rate)[int(np.argmax(spectrum))])


class RecordingSink:
    """Stands in for the room's AudioSource: keeps the frames it is given."""

    def __init__(self) -> None:
        self.frames: list[rtc.AudioFrame] = []
        self.cleared = 0

    async def capture_frame(self, frame: rtc.AudioFrame) -> None:
        self.frames.append(frame)

    def clear_queue(self) -> None:
        self.cleared += 1

    async def wait_for_playout(self) -> None:
        return None


def test_caller_audio_becomes_20ms_frames_at_16khz_with_its_pitch() -> None:
    audio_in = CallerAudioIn()
    out = [pcm for f in room_frames(tone(1000, 1000, 48000)) for pcm in audio_in.push(f)]
    assert {len(pcm) for pcm in out} == {640}  # 20 ms of LINEAR16 at 16 kHz
    assert 45 <= len(out) <= 50  # one second, less what the filter still holds
    pcm = np.frombuffer(b"".join(out), dtype=np.int16)
    assert abs(peak_hz(pcm[1600:], 16000) - 1000) < 5


def test_agent_audio_becomes_20ms_frames_at_48khz_with_its_pitch() -> None:
    audio_out = AgentAudioOut()
    agent = tone(440, 1000, 16000).tobytes()
    frames = [f for i in range(0, len(agent), 640) for f in audio_out.push(agent[i : i + 640])]
    frames += audio_out.flush()
    assert all(isinstance(f, rtc.AudioFrame) for f in frames)
    assert {(f.sample_rate, f.num_channels, f.samples_per_channel) for f in frames} == {(48000, 1, 960)}
    assert len(frames) in (50, 51)  # the flush pads the filter's tail into one last frame
    pcm = np.concatenate([np.frombuffer(f.data, dtype=np.int16) for f in frames])
    assert abs(peak_hz(pcm[4800:-4800], 48000) - 440) < 5


async def test_the_session_reads_audio_digits_and_one_hangup() -> None:
    transport = RoomTransport(RecordingSink())
    for f in room_frames(tone(300, 200, 48000)):
        transport.caller_frame(f)
    transport.caller_dtmf("5")
    transport.caller_left()
    transport.caller_left()  # a second departure event (room disconnect) adds nothing
    transport.caller_frame(room_frames(tone(300, 20, 48000))[0])  # after leaving: ignored
    events = [e async for e in transport.inbound()]
    assert isinstance(events[-1], CallerHangup) and isinstance(events[-2], CallerDtmf)
    audio = [e for e in events if isinstance(e, CallerAudio)]
    assert audio and all(len(e.data) == 640 for e in audio)
    assert transport.caller_format.sample_rate == 16000


async def test_a_hangup_gets_through_a_full_queue() -> None:
    transport = RoomTransport(RecordingSink(), inbound_limit_ms=100)  # room for 5 frames
    for f in room_frames(tone(300, 1000, 48000)):
        transport.caller_frame(f)
    transport.caller_left()
    events = [e async for e in transport.inbound()]
    assert len(events) == 5 and isinstance(events[-1], CallerHangup)


async def test_agent_frames_play_into_the_room_and_barge_in_clears_them() -> None:
    sink = CountingSink()
    transport = RoomTransport(sink, tail_flush_ms=60)
    playback = asyncio.create_task(transport.run_playback())
    try:
        agent = tone(440, 400, 16000).tobytes()
        for i in range(0, len(agent), 640):
            transport.send_audio(agent[i : i + 640])
        transport.send_event(TurnTimings(turn=1))  # the room ignores what is not playback
        await asyncio.wait_for(transport.wait_played(), 2)
        played = len(sink.frames)
        assert played >= 18 and all(f.sample_rate == 48000 for f in sink.frames)

        for i in range(0, len(agent), 640):
            transport.send_audio(agent[i : i + 640])
        transport.send_event(ClearAudio(turn=1))  # before the playback task ran again
        await asyncio.wait_for(transport.wait_played(), 2)
        assert len(sink.frames) == played and sink.cleared == 1
    finally:
        playback.cancel()


class CountingSink(RecordingSink):
    """A RecordingSink a test can wait on."""

    def __init__(self) -> None:
        super().__init__()
        self.more = asyncio.Event()

    async def capture_frame(self, frame: rtc.AudioFrame) -> None:
        await super().capture_frame(frame)
        self.more.set()

    async def wait_frames(self, count: int) -> None:
        async with asyncio.timeout(5):
            while len(self.frames) < count:
                self.more.clear()
                await self.more.wait()


async def test_an_utterances_tail_plays_when_the_agent_stops_not_before_the_next_reply() -> None:
    sink = CountingSink()
    transport = RoomTransport(sink, tail_flush_ms=60)
    playback = asyncio.create_task(transport.run_playback())
    try:
        first = tone(440, 400, 16000).tobytes()
        for i in range(0, len(first), 640):
            transport.send_audio(first[i : i + 640])
        # The filter and the slicer hold ~40 ms until the agent has been quiet a while; then
        # all 400 ms play, the tail padded into one last 20 ms frame.
        await sink.wait_frames(20)
        await asyncio.sleep(0.12)  # nothing more comes: the tail was already out
        assert len(sink.frames) in (20, 21)
        heard = np.concatenate([np.frombuffer(f.data, dtype=np.int16) for f in sink.frames])
        voiced = np.flatnonzero(np.abs(heard) > 1000)
        assert voiced[-1] >= 48 * 395  # the utterance's last milliseconds are in the room

        # The next reply starts with its own audio, not the previous one's stale tail.
        played = len(sink.frames)
        second = tone(1000, 200, 16000).tobytes()
        for i in range(0, len(second), 640):
            transport.send_audio(second[i : i + 640])
        await sink.wait_frames(played + 10)
        start = np.frombuffer(sink.frames[played].data, dtype=np.int16)
        assert abs(peak_hz(start, 48000) - 1000) < 60
    finally:
        playback.cancel()
