"""Helpers for the config-first bidirectional streams every service speaks."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, TypeVar

from common.errors import InvalidArgument

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
    return first, it
