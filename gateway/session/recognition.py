"""The call's recognition stream, kept alive across STT instance failures.

When the stream fails mid-call (the instance died, reset or cancelled the stream, a deadline)
it is re-opened, on another instance when there is one (``ChannelPool.mark_failed``), and the
caller audio the recognizer had not finished with is sent again, so no word is lost:

- ``common.replay.ReplayBuffer`` (shared with stt_svc's provider chain) keeps the caller audio sent to STT from the recognizer's *done point*: the end
  of its last final, or, while no utterance is open, all but the last ``idle_keep_ms`` (so a
  caller who only listens does not fill it). It is bounded (``replay_s``, 30 s by default):
  should an utterance run longer than that without a final (stt_svc cuts one at 25 s), only its
  last ``replay_s`` are replayed and the loss is logged.
- The new stream receives that audio from the done point, then the live audio. Its events
  carry offsets from its own start; they are shifted by where it started, so the call sees one
  continuous timeline (``AudioClock`` maps offsets to arrival times, endpointing keeps working)
  and audio already finalized is never recognized twice.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable

import grpc.aio

from common.audio import Format
from common.discovery import ChannelPool
from common.errors import Unavailable, VoiceAIError
from common.gen.voiceai.common.v1 import usage_pb2
from common.replay import ReplayBuffer
from gateway import call_trace
from gateway.session.instances import FAILOVERS, is_instance_failure
from gateway.session.services import describe_rpc_error
from gateway.session.streams import Final, Interim, SpeechStarted, SttEvent, SttStream, UtteranceEnd

log = logging.getLogger(__name__)

REPLAY_MESSAGE_MS = 500  # replayed audio goes out in messages of up to this much (stt_svc: <= 1 s)


class Recognition:
    """The call's recognition stream with failover and replay (see module docstring)."""

    # Issue 17: where stt_svc's usage reports go (the call's UsageFold.stt); set by CallerInput.
    on_usage: Callable[[usage_pb2.Usage], None] | None = None

    def __init__(
        self,
        pool: ChannelPool,
        fmt: Format,
        language: str,
        keyterms: tuple[str, ...],
        endpointing_ms: int,
        *,
        providers: tuple[str, ...] = (),
        model: str = "",
        reopen_attempts: int = 2,
        replay_s: float = 30.0,
        idle_keep_ms: int = 2000,
    ) -> None:
        self._pool = pool
        self._fmt = fmt
        self._config = (fmt, language, keyterms, endpointing_ms, providers, model)
        self._reopen_attempts = reopen_attempts
        self._ring = ReplayBuffer(fmt.bytes_for_ms(int(replay_s * 1000)))
        # While no utterance is open, audio older than this cannot hold unrecognized speech:
        # stt_svc reports speech ~200 ms after it starts and keeps a 300 ms pre-roll.
        self._idle_keep = fmt.bytes_for_ms(idle_keep_ms)
        self._piece = fmt.bytes_for_ms(REPLAY_MESSAGE_MS)
        self._stream: SttStream | None = None  # the stream events are read from
        self._live: SttStream | None = None  # the stream caller audio goes to; None while replaying
        self._base = 0  # byte offset (in the call's audio) where the current stream's audio began
        self._base_ms = 0.0
        self._done = 0  # byte offset up to which the recognizer is done with the audio
        self._utterance_open = False

    async def open(self) -> None:
        self._stream = self._live = await self._open_stream()

    async def _open_stream(self) -> SttStream:
        stt = SttStream(self._pool)
        stt.on_usage = self.on_usage  # issue 17: stt_svc's usage reports, to the call's fold
        try:
            await stt.open(*self._config)
        except BaseException:
            await stt.close()
            raise
        return stt

    async def send(self, chunk: bytes) -> None:
        """Send caller audio; kept for replay. Never raises for a failed stream: ``events()``
        sees the failure and re-opens, and this audio is replayed then."""
        ring = self._ring
        ring.append(chunk)
        live = self._live
        if live is None:
            return
        if not self._utterance_open and ring.end - self._idle_keep > self._done:
            self._done = ring.end - self._idle_keep
            ring.release(self._done)
        try:
            await live.send(chunk)
        except (grpc.aio.AioRpcError, grpc.aio.UsageError, asyncio.InvalidStateError):
            self._drop_live(live)
        except asyncio.CancelledError:
            # grpc.aio raises CancelledError for a write on a call the failover has just cancelled.
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise
            self._drop_live(live)

    def _drop_live(self, live: SttStream) -> None:
        if self._live is live:
            self._live = None

    async def events(self) -> AsyncIterator[SttEvent]:
        """Recognition events for the whole call, offsets on the call's timeline; the stream
        is re-opened (with replay) when it fails. Raises Unavailable when it cannot be kept."""
        failures = 0
        while True:
            stream = self._stream
            assert stream is not None
            error: grpc.aio.AioRpcError | None = None
            try:
                async for event in stream.events():
                    failures = 0
                    yield self._shift(event)
            except grpc.aio.AioRpcError as e:
                error = e
            if error is None:
                return
            failures += 1
            reason = describe_rpc_error("stt", error)
            if is_instance_failure(error.code()):
                self._pool.mark_failed(stream.address)
            if failures > self._reopen_attempts:
                raise Unavailable(reason) from error
            failures = await self._failover(stream.address, reason, failures)

    async def _failover(self, failed: str, reason: str, failures: int) -> int:
        """Re-open on another instance and replay; returns the failure count it ended with."""
        started = time.monotonic()
        old, self._stream, self._live = self._stream, None, None
        if old is not None:
            await old.close()
        while True:
            if failures > 1:  # the previous re-open failed too: give discovery a moment
                await asyncio.sleep(0.1 * failures)
            try:
                self._stream = await self._open_stream()
                replayed_ms, lost_ms = await self._replay(self._stream)
                break
            except (grpc.aio.AioRpcError, VoiceAIError) as e:
                if self._stream is not None:
                    if isinstance(e, grpc.aio.AioRpcError) and is_instance_failure(e.code()):
                        self._pool.mark_failed(self._stream.address)
                    await self._stream.close()
                    self._stream = None
                failures += 1
                if failures > self._reopen_attempts:
                    raise Unavailable(describe_rpc_error("stt", e)) from e
                log.warning("re-opening the recognition stream failed: %s", describe_rpc_error("stt", e))
        self._live = self._stream
        FAILOVERS.labels("stt").inc()
        call_trace.span_since(
            "gateway.stt_failover", started, failed_instance=failed, instance=self._stream.address
        )
        log.warning(
            "stt failover: %s; recognition re-opened on %s (was %s), %.0f ms of caller audio"
            " replayed in %.0f ms%s",
            reason,
            self._stream.address,
            failed,
            replayed_ms,
            (time.monotonic() - started) * 1000.0,
            f"; {lost_ms:.0f} ms beyond the replay window were not replayed" if lost_ms else "",
            extra={"service": "stt", "failed_instance": failed, "new_instance": self._stream.address},
        )
        return failures

    async def _replay(self, stream: SttStream) -> tuple[float, float]:
        """Send the audio from the done point, then catch up with what arrived meanwhile."""
        ring = self._ring
        start = max(self._done, ring.start)
        lost_ms = self._fmt.ms_for_bytes(start - self._done)
        self._done = self._base = start
        self._base_ms = self._fmt.ms_for_bytes(start)
        self._utterance_open = False
        sent = start
        while sent < ring.end:  # send() keeps appending while we await
            if sent < ring.start:  # over replay_s of new audio arrived meanwhile: start again
                raise Unavailable("the recognition stream fell behind the caller while replaying")
            for piece in ring.pieces(sent, self._piece):
                try:
                    await stream.send(piece)
                except asyncio.InvalidStateError:
                    # The new stream has already ended: reading it raises its status.
                    async for _ in stream.events():
                        pass
                    raise Unavailable("the recognition stream ended while replaying") from None
                sent += len(piece)
        return self._fmt.ms_for_bytes(sent - start), lost_ms

    def _shift(self, event: SttEvent) -> SttEvent:
        """Move the event to the call's timeline and track where the recognizer is done."""
        base = self._base_ms
        if isinstance(event, Interim):
            return event
        if isinstance(event, SpeechStarted):
            self._utterance_open = True
            return SpeechStarted(round(event.offset_ms + base)) if base else event
        if isinstance(event, Final):
            end_ms = round(event.end_ms + base) if event.end_ms > 0 else 0
            if end_ms:
                done = min(self._fmt.bytes_for_ms(end_ms), self._ring.end)
                if done > self._done:
                    self._done = done
                    self._ring.release(done)
            if event.speech_final:
                self._utterance_open = False
            return Final(event.text, end_ms, event.speech_final) if base else event
        self._utterance_open = False  # UtteranceEnd
        if not base or event.last_word_end_ms <= 0:
            return event
        return UtteranceEnd(round(event.last_word_end_ms + base))

    async def close(self) -> None:
        self._live = None
        if self._stream is not None:
            stream, self._stream = self._stream, None
            await stream.close()
