"""Cuts streamed text (LLM tokens) into speakable pieces as early as it safely can.

Pure: no I/O, no clock. A sentence is emitted as soon as its end is seen: "!" or "?" followed by
whitespace, a newline, or "." (or "…") followed by whitespace, unless the next word starts in
lower case ("at 10 a.m. tomorrow" goes on; LLM tokens carry their leading space, so the next
word's first letter comes with the space). Titles ("Dr. Smith"), initials ("J. Doe"), "No. 5",
decimals ("3.5") and times ("10:30") never end a sentence.

A long run without a sentence end is cut at its last clause boundary (", ", "; ", ": ", " - ",
"—") once it passes ``clause_chars``, and at a space once it passes ``max_chars``, so first audio
is never held back by one long sentence. The first piece of each reply (the text after the start
or a flush) is cut at its first clause boundary: "Sure," is spoken while "I can help with that."
is still being written. ``flush()`` returns whatever is buffered.
"""

from __future__ import annotations

import re

# Words that, followed by "." and a capitalised word, still do not end a sentence.
_TITLES = frozenset(
    [
        "mr",
        "mrs",
        "ms",
        "dr",
        "prof",
        "sr",
        "jr",
        "st",
        "mt",
        "ave",
        "blvd",
        "vs",
        "approx",
        "dept",
        "fig",
        "inc",
        "ltd",
        "co",
        "corp",
        "gen",
        "col",
        "lt",
        "sgt",
        "rev",
    ]
)
# Followed by "." and a number ("No. 5", "vol. 2"), these do not end a sentence either.
_NUMBER_PREFIXES = frozenset(["no", "nos", "vol", "pp", "p", "ch", "sec", "art"])
_SENTENCE_END = re.compile(r"(?:[.!?…]+[\"'”’)\]]*|\n)")
_CLAUSE_END = re.compile(r"[,;:](?=\s)|\s[-–](?=\s)|—")
_MIN_CLAUSE_CUT = 20  # a long run is not cut into a tiny head and a long tail


class Segmenter:
    """Buffers streamed text; ``push`` returns the pieces that the new text completed."""

    __slots__ = ("_buf", "_clause_chars", "_first", "_max_chars")

    def __init__(self, clause_chars: int = 80, max_chars: int = 240) -> None:
        self._buf = ""
        self._clause_chars = clause_chars
        self._max_chars = max_chars
        self._first = True

    @property
    def pending(self) -> int:
        """Characters buffered and not yet emitted."""
        return len(self._buf)

    def push(self, text: str) -> list[str]:
        self._buf += text
        out: list[str] = []
        while (piece := self._next_piece()) is not None:
            piece = piece.strip()
            if piece:
                out.append(piece)
        return out

    def flush(self) -> str:
        """Everything buffered (stripped; may be ""); the next text starts a new reply."""
        piece, self._buf = self._buf.strip(), ""
        self._first = True
        return piece

    def _next_piece(self) -> str | None:
        buf = self._buf
        sentence_end = self._sentence_end(buf)
        if self._first:
            clause = _CLAUSE_END.search(buf)
            if (
                clause is not None
                and clause.end() <= self._max_chars
                and (sentence_end is None or clause.end() < sentence_end)
            ):
                return self._cut(clause.end())
        if sentence_end is not None and sentence_end <= self._max_chars:
            return self._cut(sentence_end)
        if len(buf) >= self._clause_chars:
            clauses = [
                m.end() for m in _CLAUSE_END.finditer(buf) if _MIN_CLAUSE_CUT <= m.end() <= self._max_chars
            ]
            if clauses:
                return self._cut(clauses[-1])
        if len(buf) >= self._max_chars:
            space = buf.rfind(" ", 0, self._max_chars)
            return self._cut(space if space > 0 else self._max_chars)
        return None

    @staticmethod
    def _sentence_end(buf: str) -> int | None:
        """Index just past the first certain sentence end in ``buf``, or None."""
        n = len(buf)
        for m in _SENTENCE_END.finditer(buf):
            end = m.end()
            if m.group() == "\n":
                return end
            nxt = end
            while nxt < n and buf[nxt].isspace():
                nxt += 1
            if nxt == end:
                continue  # "3.5", "e.g.," or more text of the same token still to come
            if "\n" in buf[end:nxt]:
                return end
            if buf[m.start()] in "!?":
                return end
            # The next word decides ("a.m. tomorrow" vs "a.m. Tomorrow") when it is there; a
            # trailing ". " is trusted, as a client sending whole sentences ends them that way.
            if _continues(buf, m.start(), buf[nxt] if nxt < n else None):
                if nxt == n:
                    return None
                continue
            return end
        return None

    def _cut(self, at: int) -> str:
        piece, self._buf = self._buf[:at], self._buf[at:]
        if piece.strip():
            self._first = False
        return piece


def _continues(buf: str, dot: int, next_char: str | None) -> bool:
    """Whether the "." at ``dot`` is inside a sentence, given the next word's first letter if known."""
    if next_char is not None and next_char.islower():
        return True
    start = dot
    while start > 0 and not buf[start - 1].isspace():
        start -= 1
    word = buf[start:dot].lower().lstrip("(\"'“‘")
    if not word:
        return False
    if next_char is not None and next_char.isdigit():
        return word in _NUMBER_PREFIXES
    if word in _TITLES:
        return True
    # An initial ("J. Doe"), but not the pronoun ("so did I. Then").
    return len(word) == 1 and word.isalpha() and buf[dot - 1].isupper() and word != "i"
