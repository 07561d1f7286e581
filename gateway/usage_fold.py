"""One call's usage lines, folded from what each service reported as the call went.

The services count what they consumed where they consumed it and say which provider, model and
key served it: llm_svc in each reply's ``done.usage.lines``, tts_svc by tagging the first chunk
of each piece with the provider and model that spoke it (a piece restarted by a fallback is
tagged again), stt_svc with ``usage`` events. The gateway only adds them up per turn, provider,
model, key and unit; tenant_svc prices the lines when the record is written.

Per chunk this is one dict update, and only for chunks that start a piece; nothing per frame.
"""

from __future__ import annotations

from common.gen.voiceai.common.v1 import usage_pb2

_Key = tuple[str, str, str, str, str, int]  # component, provider, model, key label, unit, turn
# A piece whose service did not say who spoke it (an older tts_svc): recorded, never priced.
UNATTRIBUTED = "unattributed"


class UsageFold:
    """Usage lines of one call, summed by (component, provider, model, key, unit, turn)."""

    __slots__ = ("_lines", "_tts")

    def __init__(self) -> None:
        self._lines: dict[_Key, int] = {}
        self._tts: tuple[str, str] = (UNATTRIBUTED, "")

    def add(self, line: usage_pb2.UsageLine, turn: int | None = None) -> None:
        """One reported line (``turn`` overrides the line's own)."""
        key = (
            line.component,
            line.provider,
            line.model,
            line.key_label,
            line.unit,
            line.turn if turn is None else turn,
        )
        self._lines[key] = self._lines.get(key, 0) + line.quantity_milli

    def llm(self, turn: int, usage: usage_pb2.Usage) -> None:
        """A reply's ``done.usage`` from llm_svc."""
        for line in usage.lines:
            self.add(line, turn)

    def stt(self, usage: usage_pb2.Usage) -> None:
        """A ``usage`` report from stt_svc (audio actually sent to each provider)."""
        for line in usage.lines:
            self.add(line, 0)

    def tts_chunk(self, turn: int, text: str, provider: str, model: str, seconds: float) -> None:
        """One TTS audio chunk: a tagged chunk bills its piece's characters to the provider that
        spoke it; every chunk adds its audio seconds to the provider of the piece it belongs to."""
        if text:
            self._tts = (provider or UNATTRIBUTED, model)
            self._bump("tts", self._tts, "character", turn, len(text) * 1000)
        if seconds > 0:
            self._bump("tts", self._tts, "second", turn, round(seconds * 1000))

    def _bump(self, component: str, who: tuple[str, str], unit: str, turn: int, milli: int) -> None:
        key = (component, who[0], who[1], "", unit, turn)
        self._lines[key] = self._lines.get(key, 0) + milli

    def lines(self) -> list[usage_pb2.UsageLine]:
        """The folded lines, in a stable order (turn, component, provider, model, unit)."""
        ordered = sorted(self._lines.items(), key=lambda kv: (kv[0][5], *kv[0][:5]))
        return [
            usage_pb2.UsageLine(
                component=c, provider=p, model=m, key_label=k, unit=u, turn=t, quantity_milli=q
            )
            for (c, p, m, k, u, t), q in ordered
            if q > 0
        ]

    def __len__(self) -> int:
        return len(self._lines)


__all__ = ["UNATTRIBUTED", "UsageFold"]
