"""The callers of the gateway benchmark: many Converse calls in one cheap process.

``python -m tests.bench.loadgen`` reads a JSON plan on stdin (address, start time, one entry
per call) and prints one JSON result per call on stdout. The benchmark runs one such process
per ``--calls-per-process`` calls so that no caller event loop is busy enough to delay what
it measures.

It is built to cost the 2 shared cores as little as possible, so the mesh is what is measured:
requests are serialized once at start-up (the stub passes bytes through), responses are told
apart by their first byte (the oneof field's tag) and only non-audio ones are parsed. The
caller edge stays real: every call sends 20 ms frames on its own absolute real-time schedule.

Each call records, per turn, when its last speech frame was handed to gRPC and when the first
agent audio frame of the reply arrived; and how late its own timer woke for each frame, which
bounds how much of a measured latency is the caller's own delay (``lag``).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from dataclasses import asdict, dataclass, field

import grpc.aio
import numpy as np

from common.gen.voiceai.common.v1 import audio_pb2
from common.gen.voiceai.gateway.v1 import gateway_pb2
from common.tls import TlsConfig, edge_channel, edge_client_tls

RATE = 16000
FRAME_S = 0.02
FRAME = RATE * 20 // 1000 * 2
MAX_SPEECH_FRAMES = 100
METHOD = "/voiceai.gateway.v1.CallGatewayService/Converse"
_AUDIO_TAG = 0x0A  # ConverseResponse.audio: field 1, length-delimited
_METRICS_TAG = 0x2A  # ConverseResponse.turn_metrics: field 5, length-delimited

_t = np.arange(FRAME // 2 * MAX_SPEECH_FRAMES) / RATE
_SPEECH = (6000 * np.sin(2 * np.pi * 220 * _t)).astype(np.int16).tobytes()
SPEECH_FRAMES = [
    gateway_pb2.ConverseRequest(audio=_SPEECH[i : i + FRAME]).SerializeToString()
    for i in range(0, len(_SPEECH), FRAME)
]
SILENCE_FRAME = gateway_pb2.ConverseRequest(audio=b"\x00" * FRAME).SerializeToString()
HANGUP = gateway_pb2.ConverseRequest(hangup=gateway_pb2.Hangup()).SerializeToString()


def config_request(end_of_turn_silence_ms: int) -> bytes:
    return gateway_pb2.ConverseRequest(
        config=gateway_pb2.CallConfig(
            agent=gateway_pb2.AgentConfig(
                system_prompt="bench",
                turn_taking=gateway_pb2.TurnTaking(end_of_turn_silence_ms=end_of_turn_silence_ms),
            ),
            caller_audio_format=audio_pb2.AudioFormat(
                encoding=audio_pb2.AUDIO_ENCODING_LINEAR16, sample_rate_hertz=RATE, channels=1
            ),
        )
    ).SerializeToString()


@dataclass
class CallPlan:
    """One caller: when it dials (seconds after the common start), and per turn how many
    20 ms frames it speaks and how long it pauses after the agent's reply."""

    start_s: float
    speech_frames: list[int]
    pause_frames: list[int]
    tenant: str
    authorization: str  # "Bearer <token>" for the tenant


@dataclass
class CallResult:
    connected: float = 0.0
    ended: float = 0.0
    # per turn: (speech end, first agent audio, stage ms: stt_final, end_of_turn, llm_first_token,
    # tts_first_audio, first_audio_out)
    turns: list[tuple[float, float, list[int]]] = field(default_factory=list)
    gaps_ms: list[float] = field(default_factory=list)
    lag_ms: list[float] = field(default_factory=list)
    error: str = ""


class _Call:
    """One caller's state; the reader and writer share it."""

    def __init__(self, plan: CallPlan) -> None:
        self.plan = plan
        self.result = CallResult()
        self.turn_done = 0
        self.first_audio = 0.0
        self.last_audio = 0.0
        self.metrics: list[int] = []
        self.changed = asyncio.Event()

    async def read(self, call: grpc.aio.StreamStreamCall) -> None:
        gaps = self.result.gaps_ms
        async for raw in call:
            now = time.monotonic()
            tag = raw[0] if raw else 0
            if tag == _AUDIO_TAG:
                if self.first_audio == 0.0:
                    self.first_audio = now
                elif now - self.last_audio < 0.2:  # same utterance: a pacing gap
                    gaps.append(round((now - self.last_audio) * 1000.0, 2))
                self.last_audio = now
            elif tag == _METRICS_TAG:
                m = gateway_pb2.ConverseResponse.FromString(raw).turn_metrics
                self.metrics = [
                    m.stt_final_ms,
                    m.end_of_turn_ms,
                    m.llm_first_token_ms,
                    m.tts_first_audio_ms,
                    m.first_audio_out_ms,
                ]
                self.turn_done = m.turn
                self.changed.set()

    async def run(self, channel: grpc.aio.Channel, config: bytes, start_at: float) -> None:
        plan, result = self.plan, self.result
        next_at = start_at + plan.start_s
        await asyncio.sleep(max(0.0, next_at - time.monotonic()))
        converse = channel.stream_stream(METHOD)  # bytes in, bytes out: no protobuf on the hot path
        call = converse(metadata=(("x-tenant-id", plan.tenant), ("authorization", plan.authorization)))
        reader = asyncio.get_running_loop().create_task(self.read(call))
        lag = result.lag_ms

        async def send(frame: bytes) -> None:
            nonlocal next_at
            next_at += FRAME_S
            delay = next_at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            late = time.monotonic() - next_at
            lag.append(round(late * 1000.0, 2) if late > 0 else 0.0)
            await call.write(frame)

        try:
            result.connected = time.monotonic()
            await call.write(config)
            next_at = time.monotonic()
            for turn, (speech, pause) in enumerate(
                zip(plan.speech_frames, plan.pause_frames, strict=True), 1
            ):
                for _ in range(pause):
                    await send(SILENCE_FRAME)
                for frame in SPEECH_FRAMES[: speech - 1]:
                    await send(frame)
                # The last speech frame: the clock starts when it is handed to gRPC.
                next_at += FRAME_S
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))
                speech_end = time.monotonic()
                self.first_audio = 0.0
                await call.write(SPEECH_FRAMES[speech - 1])
                deadline = speech_end + 15.0
                while self.turn_done < turn and time.monotonic() < deadline:
                    await send(SILENCE_FRAME)
                if self.turn_done < turn:
                    result.error = f"turn {turn} never finished"
                    return
                result.turns.append((speech_end, self.first_audio, self.metrics))
            await call.write(HANGUP)
            await call.done_writing()
            await asyncio.wait_for(reader, 5.0)
        except (grpc.aio.AioRpcError, TimeoutError) as e:
            result.error = str(e)[:200]
        finally:
            result.ended = time.monotonic()
            reader.cancel()
            call.cancel()


async def run_calls(
    address: str, start_at: float, plans: list[CallPlan], config: bytes, channel_per_call: bool = False
) -> list[CallResult]:
    calls = [_Call(p) for p in plans]
    tls = edge_client_tls()  # TLS as the environment says (gateway --tls: the bench's dev CA)
    if channel_per_call:
        await asyncio.gather(*(_own_channel(c, address, config, start_at, tls) for c in calls))
        return [c.result for c in calls]
    async with edge_channel(address, tls) as channel:
        await asyncio.gather(*(c.run(channel, config, start_at) for c in calls))
    return [c.result for c in calls]


# Its own subchannel pool, so each caller really has its own TCP connection (as independent SIP
# edges or clients would) instead of sharing the process-wide one for the same target.
_OWN_CONNECTION = [("grpc.use_local_subchannel_pool", 1)]


async def _own_channel(call: _Call, address: str, config: bytes, start_at: float, tls: TlsConfig) -> None:
    await asyncio.sleep(max(0.0, start_at + call.plan.start_s - time.monotonic() - 0.5))
    async with edge_channel(address, tls, options=_OWN_CONNECTION) as channel:
        await call.run(channel, config, start_at)


def main() -> None:
    import uvloop

    spec = json.load(sys.stdin)
    plans = [CallPlan(**p) for p in spec["plans"]]
    config = config_request(spec["end_of_turn_silence_ms"])
    results = uvloop.run(
        run_calls(spec["address"], spec["start_at"], plans, config, spec.get("channel_per_call", False))
    )
    json.dump([asdict(r) for r in results], sys.stdout)


if __name__ == "__main__":
    main()
