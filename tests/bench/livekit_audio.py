"""CPU of the LiveKit room path's audio per call-minute: LiveKit's native resampling (the room
asks for 16 kHz both ways) against resampling with ``rtc.AudioResampler`` on the Python side
(48 kHz frames in and out of the transport, as before issue 21).

    python -m tests.bench.livekit_audio [--calls 20] [--seconds 10] [--repeat 3]

Each call is real ``livekit.rtc`` through the FFI, without a server: the caller's 48 kHz audio
is captured into an ``AudioSource`` whose local track an ``AudioStream`` reads (as a room's
remote track would be read) into a ``RoomTransport``; the session side reads its inbound events
and sends the agent's 20 ms 16 kHz frames back, which the transport's playback task captures
into the room's ``AudioSource`` (published as a local track). Both directions run all the time,
20 ms frames on a real-time clock. CPU is this process's (every thread, the FFI's included), so
the simulated caller's capture is in both figures alike; the call session, gRPC hops and the
engines are not (the callers section reports those for Converse).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import time

import numpy as np
import uvloop
from livekit import rtc

from gateway.livekit.audio import PIPELINE_RATE, ROOM_RATE
from gateway.livekit.transport import RoomTransport

FRAME_S = 0.02


def _tone(rate: int, seconds: float) -> bytes:
    t = np.arange(int(rate * seconds)) / rate
    return (6000 * np.sin(2 * np.pi * 300 * t)).astype(np.int16).tobytes()


async def _one_call(room_rate: int, stop_at: float, phase: float, transport_on: bool = True) -> None:
    caller = rtc.AudioSource(ROOM_RATE, 1, queue_size_ms=200)
    caller_track = rtc.LocalAudioTrack.create_audio_track("caller", caller)
    stream = rtc.AudioStream(caller_track, sample_rate=room_rate, num_channels=1, frame_size_ms=20)
    agent = rtc.AudioSource(room_rate, 1, queue_size_ms=200)
    agent_track = rtc.LocalAudioTrack.create_audio_track("agent", agent)
    transport = RoomTransport(agent, room_rate=room_rate)
    speech = _tone(ROOM_RATE, 1.0)
    reply = _tone(PIPELINE_RATE, 1.0)
    in_bytes, out_bytes = ROOM_RATE // 50 * 2, PIPELINE_RATE // 50 * 2

    async def read() -> None:
        async for event in stream:
            if transport_on:
                transport.caller_frame(event.frame)

    async def session() -> None:
        async for _ in transport.inbound():
            pass

    async def clock() -> None:
        next_at = time.monotonic() + phase
        i = 0
        while next_at < stop_at:
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            offset = (i % 50) * in_bytes
            await caller.capture_frame(rtc.AudioFrame(speech[offset : offset + in_bytes], ROOM_RATE, 1, 960))
            if transport_on:
                reply_at = (i % 50) * out_bytes
                transport.send_audio(reply[reply_at : reply_at + out_bytes])
            next_at += FRAME_S
            i += 1
        transport.caller_left()

    tasks = [asyncio.create_task(c) for c in (read(), session(), transport.run_playback())]
    try:
        await clock()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(Exception):
            await stream.aclose()
        await caller.aclose()
        await agent.aclose()
        del caller_track, agent_track


async def _run(calls: int, seconds: float, room_rate: int, transport_on: bool = True) -> float:
    start = time.monotonic() + 0.5
    stop_at = start + seconds
    cpu0 = time.process_time()
    await asyncio.gather(
        *(_one_call(room_rate, stop_at, 0.5 + i * FRAME_S / calls, transport_on) for i in range(calls))
    )
    cpu = time.process_time() - cpu0
    return cpu / (calls * seconds / 60.0)


def main(argv: list[str] | None = None) -> None:
    """Print CPU-s per call-minute of the room path's audio, native resampling and Python-side."""
    parser = argparse.ArgumentParser(prog="python -m tests.bench.livekit_audio", description=__doc__)
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--repeat", type=int, default=3, help="runs per variant, interleaved (median shown)")
    args = parser.parse_args(argv)
    print(
        f"\n== LiveKit room audio, {args.calls} calls x {args.seconds:.0f} s, both directions all the time"
        " (this process's CPU per call-minute: transport + LiveKit FFI, simulated caller included)"
    )
    variants = (
        ("simulated caller alone (48 kHz track read, no transport)", ROOM_RATE, False),
        ("native: AudioStream/AudioSource at 16 kHz", PIPELINE_RATE, True),
        ("rtc.AudioResampler in the transport (48 kHz frames)", ROOM_RATE, True),
    )
    runs: list[list[float]] = [[] for _ in variants]
    for _ in range(args.repeat):  # interleaved, so a burst of load elsewhere hits every variant
        for i, (_label, rate, transport_on) in enumerate(variants):
            runs[i].append(uvloop.run(_run(args.calls, args.seconds, rate, transport_on)))
    for (label, _rate, _on), values in zip(variants, runs, strict=True):
        cells = " ".join(f"{v:.3f}" for v in values)
        print(f"  {label:<58} median {statistics.median(values):.3f} CPU-s per call-minute ({cells})")


if __name__ == "__main__":
    main()
