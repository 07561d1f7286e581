"""Size limits for every string and repeated field of every API, and strings PostgreSQL cannot
store, checked before any handler runs.

Every string field has a length limit and every repeated field a count limit: the default for
its kind, or the entry for its field name below (one name means one thing across the APIs, e.g.
``system_prompt``). Services keep their own tighter checks; these are the envelope no request
passes, so a 1 MB display name or 100,000 DTMF digits never reach a handler or a database.
A NUL character (U+0000) is refused in every string: PostgreSQL's text and jsonb cannot hold it.
``tests/unit/test_limits.py`` walks every RPC's request type and fails for a field that is not
bounded here.

``LimitsServerInterceptor`` checks whole unary requests; config-first streams are checked at
their config message (``common.streams.first_config``); per-message payloads (audio, TTS text,
DTMF) have their own bounds where they are read.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import grpc.aio
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from common.errors import InvalidArgument
from common.interceptors import EXEMPT_PREFIXES, _inner, _rebuild

DEFAULT_STRING_CHARS = 1_000
DEFAULT_REPEATED_ITEMS = 100
# By field name: long texts, machine payloads, and the short ones worth keeping tight.
STRING_CHARS: dict[str, int] = {
    "system_prompt": 32_000,
    "content": 32_768,
    "caller_text": 32_000,
    "agent_text": 32_000,
    "reply": 4_096,
    "default_reply": 4_096,
    "description": 4_096,
    "parameters_json": 16_384,
    "arguments_json": 16_384,
    "text": 4_096,
    "greeting": 1_000,
    "display_name": 200,
    "dtmf": 32,
    "page_token": 1_000,
}
REPEATED_ITEMS: dict[str, int] = {
    "turns": 10_000,
    "messages": 512,
    "intents": 256,
    "keywords": 256,
    "tools": 128,
}


def string_limit(field: FieldDescriptor) -> int:
    """How many characters ``field`` may hold."""
    return STRING_CHARS.get(field.name, DEFAULT_STRING_CHARS)


def repeated_limit(field: FieldDescriptor) -> int:
    """How many items repeated ``field`` may hold."""
    return REPEATED_ITEMS.get(field.name, DEFAULT_REPEATED_ITEMS)


def _check_string(value: str, field: FieldDescriptor, path: str) -> None:
    limit = string_limit(field)
    if len(value) > limit:
        raise InvalidArgument(f"{path} is {len(value)} characters; the limit is {limit}")
    if "\x00" in value:
        raise InvalidArgument(f"{path} contains a NUL character (U+0000), which cannot be stored; remove it")


def check_message(message: Message, prefix: str = "") -> None:
    """INVALID_ARGUMENT naming the first field of ``message`` over its limit or holding a NUL."""
    for field, value in message.ListFields():
        path = f"{prefix}{field.name}"
        if field.is_repeated:
            if field.message_type is not None and field.message_type.GetOptions().map_entry:
                continue  # no map fields in the APIs today; their keys/values are checked as added
            limit = repeated_limit(field)
            if len(value) > limit:
                raise InvalidArgument(f"{path} has {len(value)} items; at most {limit}")
            for i, item in enumerate(value):
                _check_one(item, field, f"{path}[{i}]")
        else:
            _check_one(value, field, path)


def _check_one(value: Any, field: FieldDescriptor, path: str) -> None:
    if field.type == FieldDescriptor.TYPE_STRING:
        _check_string(value, field, path)
    elif field.type == FieldDescriptor.TYPE_MESSAGE:
        check_message(value, f"{path}.")


class LimitsServerInterceptor(grpc.aio.ServerInterceptor):
    """Checks every unary request against the limits before its handler runs."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        """Wraps non-streaming-request handlers with the check."""
        handler = await continuation(handler_call_details)
        if handler is None or handler.request_streaming:
            return handler
        if handler_call_details.method.startswith(EXEMPT_PREFIXES):
            return handler
        inner = _inner(handler)

        async def refuse_if_over(request: Any, ctx: grpc.aio.ServicerContext) -> None:
            if isinstance(request, Message):
                try:
                    check_message(request)
                except InvalidArgument as e:
                    await ctx.abort(grpc.StatusCode.INVALID_ARGUMENT, e.message)

        if handler.response_streaming:

            async def stream(request: Any, ctx: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
                await refuse_if_over(request, ctx)
                async for response in inner(request, ctx):
                    yield response

            return _rebuild(handler, stream)

        async def unary(request: Any, ctx: grpc.aio.ServicerContext) -> Any:
            await refuse_if_over(request, ctx)
            return await inner(request, ctx)

        return _rebuild(handler, unary)


__all__ = [
    "DEFAULT_REPEATED_ITEMS",
    "DEFAULT_STRING_CHARS",
    "REPEATED_ITEMS",
    "STRING_CHARS",
    "LimitsServerInterceptor",
    "check_message",
    "repeated_limit",
    "string_limit",
]
