"""The gateway's channel pools to the three services, and how their failures read in logs.

The streams themselves are in ``session.streams`` (one typed stream object per hop). Channels
come from ``ChannelPool``s, so new streams go to the least-loaded instance.
"""

from __future__ import annotations

import asyncio
import contextlib

import grpc.aio

from common.discovery import ChannelPool, Resolver
from common.errors import Unavailable
from gateway.admission import require_capacity

SERVICE_TITLES = {"stt": "speech-to-text", "llm": "language-model", "tts": "text-to-speech"}


class MeshClients:
    """Channel pools for stt, llm and tts; shared by every call in the process."""

    def __init__(self, resolver: Resolver) -> None:
        # Every stream passes the request context as explicit metadata (``streams._context.call_metadata``) instead of
        # through client interceptors: grpc.aio wraps an intercepted call in extra tasks, and
        # routes each write of an intercepted stream through a queue (measured: +0.3 ms to open
        # a StreamChat, and CPU per message on the STT and TTS streams).
        self.stt = ChannelPool("stt", resolver, propagate_context=False)
        self.llm = ChannelPool("llm", resolver, propagate_context=False)
        self.tts = ChannelPool("tts", resolver, propagate_context=False)

    async def check_ready(self, timeout: float = 2.0) -> None:
        """Raise UNAVAILABLE naming the first service with no reachable instance."""

        async def one(pool: ChannelPool) -> None:
            title = SERVICE_TITLES[pool.service]
            try:
                inst = await pool.pick()
            except Unavailable as e:
                raise Unavailable(f"{title} service: {e.message}") from e
            try:
                await asyncio.wait_for(inst.channel.channel_ready(), timeout)
            except TimeoutError as e:
                raise Unavailable(
                    f"{title} service at {inst.endpoint.address} is unavailable (no connection"
                    f" within {timeout:.0f} s); the call cannot start"
                ) from e
            await require_capacity(inst.channel, pool.service, title)  # hook: overload sheds (issue 15)

        await asyncio.gather(one(self.stt), one(self.llm), one(self.tts))

    async def close(self) -> None:
        for pool in (self.stt, self.llm, self.tts):
            await pool.close()


def describe_rpc_error(service: str, error: BaseException) -> str:
    """A service failure as a log line naming the service."""
    title = SERVICE_TITLES.get(service, service)
    if isinstance(error, grpc.aio.AioRpcError):
        return f"{title} service failed: {error.code().name}: {error.details()}"
    return f"{title} service failed: {type(error).__name__}: {error}"


def describe_failure(error: BaseException) -> str:
    """The first cause of a failed turn, for the log (task groups wrap it in an ExceptionGroup)."""
    if isinstance(error, BaseExceptionGroup) and error.exceptions:
        return describe_failure(error.exceptions[0])
    if isinstance(error, grpc.aio.AioRpcError):
        return f"{error.code().name}: {error.details()}"
    with contextlib.suppress(Exception):
        return f"{type(error).__name__}: {error}"
    return type(error).__name__
