"""Helpers for the config-first bidirectional streams every service speaks."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Generic, NoReturn, TypeVar

from common.errors import InvalidArgument
from common.limits import check_message
from common.tasks import cancel_and_wait

T = TypeVar("T")


async def first_config(requests: AsyncIterator[T], oneof: str = "request") -> tuple[T, AsyncIterator[T]]:
    """The opening ``config`` message of a stream and the iterator over the rest.

    Raises INVALID_ARGUMENT when the stream is empty or opens with anything else.
    """
    it = aiter(requests)
    try:
        first: Any = await anext(it)
    except StopAsyncIteration:
        raise InvalidArgument("empty stream: the first message must be 'config'") from None
    kind = first.WhichOneof(oneof)
    if kind != "config":
        raise InvalidArgument(f"the first message must be 'config'; got '{kind or 'nothing'}'")
    check_message(first)  # issue 15: field limits and no NUL (common.limits)
    return first, it


# A client write still in flight when the server's status arrives fails, and grpc.aio then
# reports INTERNAL instead of the server's status (grpc/grpc#36066). A server that ends a
# stream with an error therefore first waits, briefly, until the client half-closes or pauses.
QUIET_S = 0.015  # shorter than the 20 ms between frames of a client sending audio in real time
SETTLE_LIMIT_S = 1.0  # a client that never pauses gets the status after this long all the same


class RequestPump(Generic[T]):
    """Owns the task that feeds a bidi stream's requests (after the config) to ``handle``.

    The first error, from ``handle`` or reported by the response side through ``fail()``, is
    kept in ``failure`` and ``on_failure`` runs once; later requests are read and dropped. The
    response side then calls ``settle()`` before raising ``failure``, so the status goes out
    while the client is not writing. A clean half-close runs ``on_half_close``.
    """

    def __init__(
        self,
        requests: AsyncIterator[T],
        handle: Callable[[T], Awaitable[None]],
        *,
        on_half_close: Callable[[], Awaitable[None]],
        on_failure: Callable[[], Awaitable[None]],
        name: str,
    ) -> None:
        self.failure: Exception | None = None
        self._requests = requests
        self._handle = handle
        self._on_half_close = on_half_close
        self._on_failure = on_failure
        self._loop = asyncio.get_running_loop()
        self._last_request = self._loop.time()
        self._task = self._loop.create_task(self._run(), name=name)

    async def _run(self) -> None:
        try:
            async for request in self._requests:
                if self.failure is not None:
                    self._last_request = self._loop.time()
                    continue
                try:
                    await self._handle(request)
                except Exception as e:
                    await self.fail(e)
            if self.failure is None:
                await self._on_half_close()
        except Exception as e:  # the request stream itself broke
            await self.fail(e)

    async def fail(self, error: Exception) -> None:
        """Record ``error`` (the first one wins) and stop the work it makes pointless."""
        if self.failure is None:
            self.failure = error
            self._last_request = self._loop.time()
            await self._on_failure()

    async def settle(self, quiet_s: float = QUIET_S, limit_s: float = SETTLE_LIMIT_S) -> None:
        """Wait until the client half-closes or sends nothing for ``quiet_s`` (at most ``limit_s``)."""
        deadline = self._loop.time() + limit_s
        while not self._task.done():
            wait = min(self._last_request + quiet_s, deadline) - self._loop.time()
            if wait <= 0:
                return
            await asyncio.wait({self._task}, timeout=wait)

    async def aclose(self) -> None:
        await cancel_and_wait(self._task)


async def refuse(requests: AsyncIterator[T], error: Exception, name: str) -> NoReturn:
    """End a stream with ``error`` once the client has half-closed or paused (see RequestPump)."""

    async def nothing() -> None:
        pass

    async def drop(_request: T) -> None:
        pass

    pump = RequestPump(requests, drop, on_half_close=nothing, on_failure=nothing, name=name)
    try:
        await pump.fail(error)
        await pump.settle()
    finally:
        await pump.aclose()
    raise error
