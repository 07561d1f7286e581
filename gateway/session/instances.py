"""Which instance a service stream runs on, and whether its failure calls for another instance.

A failed LLM or TTS stream surfaces inside a reply's task group, where an ``AioRpcError`` alone
does not say which stream (or which instance) failed. ``TrackedCall`` wraps a stream so that its
errors come out as ``InstanceRpcError``: still an ``AioRpcError`` (code and details unchanged,
so existing handlers keep working), plus the service and the instance's address.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import grpc.aio
from prometheus_client import Counter

FAILOVERS = Counter(
    "voiceai_gateway_failovers_total",
    "Streams re-opened on another instance after failing mid-call",
    ["service"],
)

# The request itself is at fault: another instance would refuse it the same way.
_REQUEST_ERRORS = frozenset(
    {
        grpc.StatusCode.OK,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.OUT_OF_RANGE,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.ALREADY_EXISTS,
    }
)


def is_instance_failure(code: grpc.StatusCode) -> bool:
    """True when the instance, not the request, failed (UNAVAILABLE after a crash or a reset,
    CANCELLED by a stopping server, DEADLINE_EXCEEDED, INTERNAL, RESOURCE_EXHAUSTED, ...)."""
    return code not in _REQUEST_ERRORS


class InstanceRpcError(grpc.aio.AioRpcError):
    """An RPC error from a known instance of a service."""

    def __init__(
        self,
        service: str,
        address: str,
        code: grpc.StatusCode,
        details: str | None,
        debug_error_string: str | None = None,
    ) -> None:
        super().__init__(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details, debug_error_string)
        self.service = service
        self.address = address


class TrackedCall:
    """A grpc.aio stream whose errors name the service and instance (see module docstring).

    Iteration, ``read``, ``write`` and ``done_writing`` tag their errors; anything else is the
    wrapped call's own.
    """

    __slots__ = ("_call", "_responses", "address", "service")

    def __init__(self, call: Any, service: str, address: str) -> None:
        self._call = call
        self._responses: AsyncIterator[Any] | None = None
        self.service = service
        self.address = address

    def _tag(self, error: grpc.aio.AioRpcError) -> InstanceRpcError:
        return InstanceRpcError(
            self.service, self.address, error.code(), error.details(), error.debug_error_string()
        )

    async def _ended(self, error: asyncio.InvalidStateError) -> BaseException:
        """A write after the server ended the call: its status is the real error."""
        if not self._call.done():  # half-closed, not ended: a usage error, not the instance's
            return error
        code = await self._call.code()
        if code == grpc.StatusCode.OK:
            return error
        return InstanceRpcError(self.service, self.address, code, await self._call.details())

    def __aiter__(self) -> TrackedCall:
        self._responses = self._call.__aiter__()
        return self

    async def __anext__(self) -> Any:
        assert self._responses is not None
        try:
            return await self._responses.__anext__()
        except grpc.aio.AioRpcError as e:
            raise self._tag(e) from e

    async def read(self) -> Any:
        try:
            return await self._call.read()
        except grpc.aio.AioRpcError as e:
            raise self._tag(e) from e

    async def write(self, request: Any) -> None:
        try:
            await self._call.write(request)
        except grpc.aio.AioRpcError as e:
            raise self._tag(e) from e
        except asyncio.InvalidStateError as e:
            raise await self._ended(e) from e

    async def done_writing(self) -> None:
        try:
            await self._call.done_writing()
        except grpc.aio.AioRpcError as e:
            raise self._tag(e) from e

    def cancel(self) -> bool:
        return bool(self._call.cancel())

    def __getattr__(self, name: str) -> Any:
        return getattr(self._call, name)


def failed_instance(error: BaseException) -> InstanceRpcError | None:
    """The first ``InstanceRpcError`` in ``error`` (task groups wrap failures in groups)."""
    if isinstance(error, InstanceRpcError):
        return error
    if isinstance(error, BaseExceptionGroup):
        for inner in error.exceptions:
            found = failed_instance(inner)
            if found is not None:
                return found
    return None
