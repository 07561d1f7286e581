"""Deepgram speak websockets, and the clean ones kept open between streams.

A stream (one agent turn) that finds an idle socket for its key, voice, rate and speed skips
the TLS and websocket handshakes before its first audio. Only a clean socket is kept: every
piece it was given ended with ``Flushed``, or an abandoned piece was confirmed by ``Cleared``.
An idle socket still holds its slot of the key's cap (Deepgram counts open sockets), so one is
closed when a stream of the same key needs the slot, when it has idled ``idle_s``, or when more
than ``max_idle`` are kept. Expiry is checked whenever the pool is used (no timer task): an
instance that goes quiet keeps at most ``max_idle`` sockets until its next stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import websockets.exceptions

from common.providers import CloseOnce

log = logging.getLogger(__name__)

# (key fingerprint, model, sample rate, speed): what a socket was opened for (its URL).
Params = tuple[str, str, int, float | None]


@dataclass(eq=False)
class SpeakSocket:
    """One open speak websocket: the SDK's socket client and what closes it (and frees its slot)."""

    ws: Any  # deepgram AsyncV1SocketClient
    stack: contextlib.AsyncExitStack  # the websocket, then the cap slot
    params: Params
    pieces: int = 0  # pieces completed on it: a used socket may have been closed by the server
    idle_since: float = 0.0
    _closer: CloseOnce | None = field(default=None, repr=False)

    async def close(self, close_s: float, *, clear: bool = False) -> None:
        """``Clear`` (if audio may be in flight) and ``Close``, then the close handshake; bounded.
        Idempotent, and finished even if the caller is cancelled: the cap slot always goes back."""
        await asyncio.shield(self.start_close(close_s, clear=clear))

    def start_close(self, close_s: float, *, clear: bool = False) -> asyncio.Task[None]:
        """Begin ``close`` now, without waiting: nothing can cancel it before it starts."""
        if self._closer is None:
            self._closer = CloseOnce(lambda: self._close(close_s, clear), "tts-deepgram-close")
        return self._closer.start()

    async def _close(self, close_s: float, clear: bool) -> None:
        try:
            async with asyncio.timeout(close_s):
                with contextlib.suppress(websockets.exceptions.WebSocketException, OSError):
                    if clear:
                        await self.ws.send_clear()
                    await self.ws.send_close()
                await self.stack.aclose()
                return
        except TimeoutError:
            log.warning("deepgram websocket did not close within %.1f s; dropped", close_s)
        # Not closed politely in time (a peer that stopped reading blocks even the sends): drop
        # the connection, then release what the stack holds (the websocket, the cap slot).
        transport = getattr(getattr(self.ws, "_websocket", None), "transport", None)
        if transport is not None:
            transport.abort()
        with contextlib.suppress(TimeoutError, websockets.exceptions.WebSocketException, OSError):
            async with asyncio.timeout(close_s):
                await self.stack.aclose()


class IdleSockets:
    """Clean sockets between streams (see module docstring); one per provider."""

    def __init__(self, *, idle_s: float = 10.0, max_idle: int = 8, close_s: float = 1.0) -> None:
        self.idle_s = idle_s
        self.max_idle = max_idle
        self.close_s = close_s
        self._idle: list[SpeakSocket] = []  # oldest first

    def __len__(self) -> int:
        return len(self._idle)

    async def take(self, params: Params) -> SpeakSocket | None:
        await self._expire()
        for i in range(len(self._idle) - 1, -1, -1):  # the most recently used first
            if self._idle[i].params == params:
                return self._idle.pop(i)
        return None

    async def put(self, socket: SpeakSocket) -> None:
        socket.idle_since = time.monotonic()
        self._idle.append(socket)
        now = time.monotonic()
        old = [s for s in self._idle if now - s.idle_since > self.idle_s]
        old += [s for s in self._idle if s not in old][: max(0, len(self._idle) - len(old) - self.max_idle)]
        await self._close_all(old)

    async def evict(self, key_fingerprint: str) -> bool:
        """Close the oldest idle socket of this key (its slot is wanted); False if none."""
        for i, socket in enumerate(self._idle):
            if socket.params[0] == key_fingerprint:
                del self._idle[i]
                await socket.close(self.close_s)
                return True
        return False

    async def _expire(self) -> None:
        now = time.monotonic()
        await self._close_all([s for s in self._idle if now - s.idle_since > self.idle_s])

    async def _close_all(self, sockets: list[SpeakSocket]) -> None:
        """Out of the pool and closing, all at once before the first await: a caller cancelled
        mid-way (a barge-in) must not leave a socket that is neither kept nor closed."""
        if not sockets:
            return
        self._idle = [s for s in self._idle if s not in sockets]
        closing = [s.start_close(self.close_s) for s in sockets]
        await asyncio.shield(asyncio.gather(*closing, return_exceptions=True))

    async def aclose(self) -> None:
        await self._close_all(list(self._idle))
