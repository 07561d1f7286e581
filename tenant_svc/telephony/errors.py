"""LiveKit's answers, translated at the boundary: a refusal is FAILED_PRECONDITION carrying
LiveKit's own message; an outage (5xx, refused connection, timeout) is UNAVAILABLE."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
from livekit.api import ServerError

from common.errors import FailedPrecondition, Unavailable


class LiveKitRefused(FailedPrecondition):
    """LiveKit answered and said no (a conflict, a bad request, our credentials)."""

    def __init__(
        self, message: str, *, code: str = "", sip_status_code: int = 0, sip_status: str = ""
    ) -> None:
        super().__init__(message)
        self.livekit_code = code
        self.sip_status_code = sip_status_code
        self.sip_status = sip_status


class LiveKitUnavailable(Unavailable):
    """LiveKit could not be reached or failed on its side; retrying later may help."""


def translate(e: BaseException, action: str) -> Exception:
    """A LiveKit failure as the error the caller gets, naming the ``action``."""
    if isinstance(e, ServerError):
        if e.status >= 500:
            return LiveKitUnavailable(f"LiveKit failed to {action}: {e.message} ({e.code}); retry shortly")
        if e.status in (401, 403):
            return LiveKitRefused(
                f"LiveKit refused our credentials to {action}: {e.message} ({e.code});"
                " check LIVEKIT_API_KEY and LIVEKIT_API_SECRET",
                code=e.code,
            )
        meta = e.metadata or {}
        code = int(meta["sip_status_code"]) if meta.get("sip_status_code", "").isdigit() else 0
        return LiveKitRefused(
            f"LiveKit refused to {action}: {e.message} ({e.code})",
            code=e.code,
            sip_status_code=code,
            sip_status=meta.get("sip_status", ""),
        )
    if isinstance(e, aiohttp.ClientError | asyncio.TimeoutError | OSError):
        return LiveKitUnavailable(f"LiveKit is unreachable, could not {action}; retry shortly")
    return e if isinstance(e, Exception) else RuntimeError(str(e))


@asynccontextmanager
async def livekit_call(action: str) -> AsyncIterator[None]:
    """Translate what the livekit-api client raises inside the block."""
    try:
        yield
    except (TimeoutError, ServerError, aiohttp.ClientError, OSError) as e:
        raise translate(e, action) from e
