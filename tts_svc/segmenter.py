"""Cuts streamed text (LLM tokens) into speakable pieces as early as it safely can.

A sentence is emitted as soon as its end is seen (". ", "! ", "? ", newline); abbreviations,
initials and decimals do not end sentences. A long run without a sentence end is cut at the last
clause boundary (", ", "; ", ": ", " - ") once it passes ``clause_chars``, and at a space once it
passes ``max_chars``, so the first audio is never held back by one long sentence. The first
piece of each reply (after a flush) is cut at its first clause boundary: "Sure," can be spoken
while "I can help with that." is still being synthesized.
"""

from __future__ import annotations

import re

_ABBREVIATIONS = frozenset(
    [
        "mr",
        "mrs",
        "ms",
        "dr",
        "prof",
        "sr",
        "jr",
        "st",
        "vs",
        "etc",
        "e.g",
        "i.e",
        "no",
        "approx",
        "dept",
        "est",
        "fig",
        "inc",
        "ltd",
        "co",
        "mt",
        "ave",
        "blvd",
    ]
)
_SENTENCE_END = re.compile(r"[.!?…]+[\"')\]]*(?=\s)|\n")
_CLAUSE_END = re.compile(r"(?:[,;:]|\s[-–—])(?=\s)")


class Segmenter:
    """Buffers text; ``push`` returns the pieces completed by the new text."""

    def __init__(self, clause_chars: int = 80, max_chars: int = 240) -> None:
        self._buf = ""
        self._clause_chars = clause_chars
        self._max_chars = max_chars
        self._first = True

    @property
    def pending(self) -> int:
        return len(self._buf)

    def push(self, text: str) -> list[str]:
        self._buf += text
        out: list[str] = []
        while True:
            piece = self._next_piece()
            if piece is None:
                return out
            if piece.strip():
                out.append(piece.strip())

    def flush(self) -> str:
        piece, self._buf = self._buf.strip(), ""
        self._first = True
        return piece

    def _next_piece(self) -> str | None:
        buf = self._buf
        sentence_end = None
        for m in _SENTENCE_END.finditer(buf):
            if m.group() != "\n" and self._is_abbreviation(buf, m.start()):
                continue
            sentence_end = m.end()
            break
        if self._first:
            clause = _CLAUSE_END.search(buf)
            if clause is not None and (sentence_end is None or clause.end() < sentence_end):
                return self._cut(clause.end())
        if sentence_end is not None:
            return self._cut(sentence_end)
        if len(buf) >= self._clause_chars:
            clauses = [m.end() for m in _CLAUSE_END.finditer(buf) if m.end() >= 20]
            if clauses:
                return self._cut(clauses[-1])
        if len(buf) >= self._max_chars:
            space = buf.rfind(" ", 0, self._max_chars)
            return self._cut(space if space > 0 else self._max_chars)
        return None

    def _cut(self, at: int) -> str:
        piece, self._buf = self._buf[:at], self._buf[at:]
        if piece.strip():
            self._first = False
        return piece

    @staticmethod
    def _is_abbreviation(buf: str, dot: int) -> bool:
        if buf[dot] != ".":
            return False
        start = dot
        while start > 0 and not buf[start - 1].isspace():
            start -= 1
        word = buf[start:dot].lower().strip("(\"'")
        if not word:
            return False
        if word in _ABBREVIATIONS:
            return True
        return len(word) == 1 and buf[start].isupper()  # an initial: "J. Smith"
