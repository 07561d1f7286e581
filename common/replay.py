"""The one replay buffer of the recognition path: caller audio a recognizer is not done with.

Two layers re-open a recognition stream mid-utterance, and both use this buffer:

- the gateway (``gateway/session/recognition.py``) when a stt_svc *instance* fails: the audio
  kept inside that instance died with it, so only the gateway can replay it;
- stt_svc (``stt_svc/chain.py``) when a *provider* fails (Deepgram -> local): the instance is
  fine and replays within itself, so the gateway never sees the switch and its own buffer stays
  untouched.

Each layer keeps its own timeline bookkeeping (the gateway's offsets are in the caller's
format and feed its ``AudioClock``; stt_svc's are 16 kHz engine offsets with per-word times),
but buffering, release on a final, bounding and replay slicing are this one class.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator


class ReplayBuffer:
    """Audio by absolute byte offset in its stream, from ``start`` to ``end``.

    Holds the chunks as appended (no copy). ``release`` drops what the recognizer is done with;
    past ``max_bytes`` the oldest whole chunks go (at least the last ``max_bytes`` stay).
    """

    __slots__ = ("_chunks", "_max", "end", "start")

    def __init__(self, max_bytes: int) -> None:
        self._chunks: deque[bytes] = deque()
        self._max = max_bytes
        self.start = 0
        self.end = 0

    def append(self, chunk: bytes) -> None:
        """Keep ``chunk`` (the stream's next bytes)."""
        self._chunks.append(chunk)
        self.end += len(chunk)
        while self.end - self.start - len(self._chunks[0]) >= self._max:
            self.start += len(self._chunks.popleft())

    def release(self, upto: int, *, exact: bool = False) -> None:
        """Forget audio before byte ``upto``: whole chunks only, or (``exact``) up to the byte."""
        chunks = self._chunks
        while chunks and self.start + len(chunks[0]) <= upto:
            self.start += len(chunks.popleft())
        if exact and chunks and self.start < upto:
            chunks[0] = chunks[0][upto - self.start :]
            self.start = upto

    def aligned_start(self, unit: int) -> int:
        """``start`` rounded up to a multiple of ``unit`` bytes (a whole ms, a whole sample)."""
        return self.start + (-self.start % unit)

    def pieces(self, since: int, max_bytes: int) -> Iterator[bytes]:
        """The audio from byte ``since`` to ``end``, in pieces of at most ``max_bytes``."""
        pos = self.start
        piece = bytearray()
        for chunk in list(self._chunks):
            if pos + len(chunk) > since:
                view = memoryview(chunk)[max(0, since - pos) :]
                while view:
                    take = min(len(view), max_bytes - len(piece))
                    piece += view[:take]
                    view = view[take:]
                    if len(piece) == max_bytes:
                        yield bytes(piece)
                        piece.clear()
            pos += len(chunk)
        if piece:
            yield bytes(piece)
