"""Task ownership helpers: every task is named, held by its owner and cancelled by it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable


async def cancel_and_wait(*tasks: asyncio.Task | None, timeout: float = 5.0) -> None:
    """Cancel ``tasks`` and wait until they have finished (their ``finally`` blocks ran).

    Never swallows the caller's own cancellation.
    """
    live = [t for t in tasks if t is not None and not t.done()]
    for task in live:
        task.cancel()
    if not live:
        return
    done, _pending = await asyncio.wait(live, timeout=timeout)
    for task in done:
        if not task.cancelled():
            with contextlib.suppress(BaseException):
                task.exception()


async def cancel_all(tasks: Iterable[asyncio.Task | None]) -> None:
    """Cancel ``tasks`` (None entries skipped) and wait until they are done."""
    await cancel_and_wait(*tasks)
