"""The Synthesizer Protocol every tts_svc engine implements."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class SynthesisOptions:
    voice: str = ""
    language: str = ""
    speaking_rate: float = 1.0


class Synthesizer(Protocol):
    """Turns one piece of text (a sentence or clause) into PCM16 mono at ``sample_rate``.

    ``SynthesisStream`` owns segmentation, ordering, pipelining and cancellation; an engine
    fills this one hook. It must not block the event loop.
    """

    name: str
    sample_rate: int
    voices: tuple[str, ...]

    async def synthesize(self, text: str, options: SynthesisOptions) -> bytes: ...
