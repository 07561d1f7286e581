"""A test caller for Converse: real-time paced audio out, every response recorded with its time."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc.aio

from common.gen.voiceai.common.v1 import audio_pb2
from common.gen.voiceai.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from tests.credentials import bearer

FRAME_MS = 20


def linear16(rate: int = 16000) -> audio_pb2.AudioFormat:
    return audio_pb2.AudioFormat(
        encoding=audio_pb2.AUDIO_ENCODING_LINEAR16, sample_rate_hertz=rate, channels=1
    )


@dataclass
class Received:
    at: float
    msg: gateway_pb2.ConverseResponse

    @property
    def kind(self) -> str:
        return self.msg.WhichOneof("event") or ""


@dataclass
class ConverseCaller:
    """Places one Converse call; ``received`` holds every response in order."""

    channel: grpc.aio.Channel
    config: gateway_pb2.CallConfig
    metadata: tuple[tuple[str, str], ...] = (("x-tenant-id", "tenant-test"), bearer("tenant-test"))
    rate: int = 16000
    received: list[Received] = field(default_factory=list)
    error: grpc.aio.AioRpcError | None = None
    read: bool = True

    async def __aenter__(self) -> ConverseCaller:
        stub = gateway_pb2_grpc.CallGatewayServiceStub(self.channel)
        self.call = stub.Converse(metadata=self.metadata)
        await self.call.write(gateway_pb2.ConverseRequest(config=self.config))
        self._changed = asyncio.Event()
        self._reader = asyncio.get_running_loop().create_task(self._read(), name="test-caller-read")
        self._next = time.monotonic()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.call.cancel()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader

    async def _read(self) -> None:
        if not self.read:
            await asyncio.sleep(3600)
        try:
            async for msg in self.call:
                self.received.append(Received(time.monotonic(), msg))
                self._changed.set()
        except grpc.aio.AioRpcError as e:
            self.error = e
        finally:
            self._changed.set()

    # -- sending
    async def send_pcm(self, pcm: bytes) -> None:
        """Send ``pcm`` as 20 ms frames, paced on an absolute clock."""
        size = self.rate * FRAME_MS // 1000 * 2
        now = time.monotonic()
        self._next = max(self._next, now - 0.1)
        for i in range(0, len(pcm), size):
            frame = pcm[i : i + size]
            if len(frame) < size:
                frame += b"\x00" * (size - len(frame))
            self._next += FRAME_MS / 1000
            delay = self._next - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            await self.call.write(gateway_pb2.ConverseRequest(audio=frame))

    async def silence(self, ms: int) -> None:
        await self.send_pcm(b"\x00\x00" * (self.rate * ms // 1000))

    async def hangup(self, timeout: float = 5.0) -> gateway_pb2.CallEnded:
        await self.call.write(gateway_pb2.ConverseRequest(hangup=gateway_pb2.Hangup()))
        await self.call.done_writing()
        await asyncio.wait_for(asyncio.shield(self._reader), timeout)
        ended = self.of("call_ended")
        assert ended, f"no call_ended; error={self.error}"
        return ended[-1].msg.call_ended

    # -- observing
    def of(self, kind: str) -> list[Received]:
        return [r for r in self.received if r.kind == kind]

    async def wait_for(
        self, pred: Callable[[ConverseCaller], object], timeout: float = 10.0, keep_talking: bool = True
    ) -> object:
        """Wait until ``pred(self)`` is truthy, sending silence meanwhile (a line carries audio)."""
        deadline = time.monotonic() + timeout
        while True:
            value = pred(self)
            if value:
                return value
            if self.error is not None or time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out waiting; error={self.error}; got {[r.kind for r in self.received]}"
                )
            if keep_talking:
                await self.silence(FRAME_MS * 5)
            else:
                self._changed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), 0.1)

    def turn_done(self, turn: int) -> Callable[[ConverseCaller], object]:
        return lambda c: next((r for r in c.of("turn_metrics") if r.msg.turn_metrics.turn == turn), None)

    def agent_texts(self) -> list[str]:
        return [r.msg.agent_speech.text for r in self.of("agent_speech")]

    def audio_bytes(self) -> int:
        return sum(len(r.msg.audio) for r in self.of("audio"))
