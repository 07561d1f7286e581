"""The caller's side of a call: caller audio validated, timed and fed to the one STT stream.

``CallerInput`` owns the call's recognition stream (``recognition.Recognition``: re-opened on
another instance when it fails, with the caller audio not yet finalized replayed), the audio clock
that maps STT offsets to arrival times, the energy VAD used as a backstop, and the batching of
caller frames toward STT: batches of ``chunk_ms``, flushed at once when the VAD sees speech
start or stop, so neither barge-in detection nor endpointing waits for a batch. Once the line
has been quiet for longer than the recognizer needs to close an utterance (its endpointing
window plus a margin), batches grow to ``quiet_chunk_ms``: a caller listening to the agent
costs a few messages a second instead of ten, and nothing waits on that audio.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

from common.audio import Format
from common.errors import InvalidArgument
from gateway.agents import Agent
from gateway.session.clock import AudioClock, EnergyVad
from gateway.session.events import Usage
from gateway.session.recognition import Recognition
from gateway.session.services import MeshClients
from gateway.session.streams import SttEvent

# Small batches continue this long past the recognizer's endpointing window: its VAD may place
# the end of speech a little later than the gateway's energy VAD does.
QUIET_MARGIN_MS = 300


class CallerInput:
    """Caller audio in, recognition events out (see module docstring)."""

    def __init__(
        self,
        fmt: Format,
        clients: MeshClients,
        agent: Agent,
        usage: Usage,
        *,
        chunk_ms: int = 100,
        quiet_chunk_ms: int = 500,
        reopen_attempts: int = 2,
    ) -> None:
        self.fmt = fmt
        self.clock = AudioClock(fmt)
        self.vad = EnergyVad(fmt)
        self._clients = clients
        self._agent = agent
        self._usage = usage
        self._reopen_attempts = reopen_attempts
        self._stt: Recognition | None = None
        self._buf = bytearray()
        self._chunk = fmt.bytes_for_ms(chunk_ms)
        self._quiet_chunk = max(self._chunk, fmt.bytes_for_ms(quiet_chunk_ms))
        self._endpointing_ms = max(200, agent.turn_taking.end_of_turn_silence_ms - 200)
        # Quiet audio past this point cannot change the recognizer's current utterance.
        self._settled = fmt.bytes_for_ms(self._endpointing_ms + QUIET_MARGIN_MS)
        self._quiet = 0  # bytes since the last voiced frame
        self._max_message = fmt.bytes_for_ms(1000)
        self._seconds_per_byte = 1.0 / (fmt.sample_rate * fmt.bytes_per_sample)
        self._was_voiced = False

    async def open(self) -> None:
        stt = Recognition(
            self._clients.stt,
            self.fmt,
            self._agent.language_code,
            self._agent.keyterms,
            self._endpointing_ms,
            providers=self._agent.stt_providers,
            model=self._agent.stt_model,
            reopen_attempts=self._reopen_attempts,
        )
        stt.on_usage = self._usage.lines.stt  # issue 17: audio each STT provider was sent
        await stt.open()
        self._stt = stt

    async def on_audio(self, data: bytes) -> float:
        """Take one caller audio message; returns its arrival time. Raises on bad audio."""
        n = len(data)
        if n > self._max_message:
            raise InvalidArgument(
                f"audio message of {self.fmt.ms_for_bytes(n):.0f} ms is over the 1000 ms limit; send 20 ms frames"
            )
        if n % self.fmt.bytes_per_sample:
            raise InvalidArgument(f"LINEAR16 audio must be whole 16-bit samples; got {n} bytes")
        now = time.monotonic()
        self.clock.on_audio(n, now)
        voiced = self.vad.on_audio(data, now)
        self._usage.stt_seconds += n * self._seconds_per_byte
        buf = self._buf
        buf += data
        if voiced:
            self._quiet = 0
            limit = self._chunk
        else:
            self._quiet += n
            limit = self._chunk if self._quiet <= self._settled else self._quiet_chunk
        if len(buf) >= limit or voiced != self._was_voiced:
            chunk = bytes(buf)
            buf.clear()
            if self._stt is not None:  # None only before open()
                await self._stt.send(chunk)
        self._was_voiced = voiced
        return now

    def events(self) -> AsyncIterator[SttEvent]:
        """Recognition events for the whole call (see ``Recognition.events``)."""
        assert self._stt is not None
        return self._stt.events()

    async def close(self) -> None:
        if self._stt is not None:
            await self._stt.close()
