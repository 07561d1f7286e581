"""The Synthesizer Protocol every tts_svc engine implements.

An engine fills one hook, ``synthesize`` (one piece of text -> PCM16 at its native rate);
``tts_svc.stream.SynthesisStream`` owns segmentation, ordering, pipelining and cancellation,
and the servicer converts the audio to the format the client asked for.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class SynthesisOptions:
    """How one stream is spoken (validated by the servicer against the engine)."""

    voice: str = ""  # "" = the engine's default voice
    language: str = ""  # BCP-47; "" = the voice's own language
    speaking_rate: float = 1.0  # 0.5..2; 1 = the voice's natural pace


class Synthesizer(Protocol):
    """A synthesis engine: one per process (model loaded once), shared by all its streams.

    Optional members, looked up with ``getattr``: ``language`` (BCP-47 the voices speak; a
    stream asking for another primary language is refused) and a blocking ``warm_up()`` run
    before the service reports SERVING.
    """

    name: str
    # PCM16 rate of every piece this engine returns.
    sample_rate: int
    # Names accepted in SynthesisOptions.voice ("" always means the default).
    voices: tuple[str, ...]

    async def synthesize(self, text: str, options: SynthesisOptions) -> bytes:
        """PCM16 mono at ``sample_rate`` for one sentence or clause.

        Must not block the event loop, and must stop its work promptly when cancelled.
        """
        ...
