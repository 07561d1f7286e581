"""Cross-cutting gRPC concerns: request context in and out, domain errors to status codes.

``ContextServerInterceptor`` requires ``x-tenant-id`` (and, on internal hops, ``x-call-id``),
binds them for the handler (logging reads them), and maps ``VoiceAIError`` to a status
(``ResourceExhausted`` with a retry hint or quota also carries ``google.rpc`` details).
``ContextClientInterceptor`` copies the bound context onto every outgoing call. Health and
reflection are exempt: Kubernetes probes and Consul checks carry no tenant.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import grpc
import grpc.aio
from google.protobuf import duration_pb2
from google.protobuf.message import DecodeError
from google.rpc import code_pb2, error_details_pb2, status_pb2

from common import context
from common.call_ids import CALL_ID_RULE, new_call_id, valid_call_id
from common.errors import ResourceExhausted, VoiceAIError

log = logging.getLogger(__name__)

EXEMPT_PREFIXES = ("/grpc.health.v1.", "/grpc.reflection.")


def metadata_dict(metadata: Sequence[Any] | None) -> dict[str, str]:
    """Text metadata as a dict (binary ``-bin`` entries are skipped; a repeated key keeps the last)."""
    out: dict[str, str] = {}
    for item in metadata or ():
        key, value = item[0], item[1]
        if isinstance(value, str):
            out[key] = value
    return out


class _Undecodable:
    """Stands in for a unary request that failed to parse, so the handler can answer
    INVALID_ARGUMENT; grpc would otherwise answer UNKNOWN before any handler runs."""

    __slots__ = ("error",)

    def __init__(self, error: DecodeError) -> None:
        self.error = error


def _tolerant(deserialize: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserialize is None:
        return None

    def parse(data: bytes) -> Any:
        try:
            return deserialize(data)
        except DecodeError as error:
            return _Undecodable(error)

    return parse


def _rebuild(handler: grpc.RpcMethodHandler, behavior: Callable[..., Any]) -> grpc.RpcMethodHandler:
    kinds = {
        (False, False): grpc.unary_unary_rpc_method_handler,
        (False, True): grpc.unary_stream_rpc_method_handler,
        (True, False): grpc.stream_unary_rpc_method_handler,
        (True, True): grpc.stream_stream_rpc_method_handler,
    }
    make = kinds[(handler.request_streaming, handler.response_streaming)]
    deserialize = handler.request_deserializer
    if not handler.request_streaming:
        # A streamed request is parsed when the handler reads it, where the error is caught.
        deserialize = _tolerant(deserialize)
    return make(behavior, request_deserializer=deserialize, response_serializer=handler.response_serializer)


def _inner(handler: grpc.RpcMethodHandler) -> Callable[..., Any]:
    return handler.stream_stream or handler.unary_stream or handler.stream_unary or handler.unary_unary


STATUS_DETAILS_KEY = "grpc-status-details-bin"


def status_details(error: ResourceExhausted) -> bytes | None:
    """A serialized ``google.rpc.Status`` carrying RetryInfo and QuotaFailure for ``error``, or
    None when it has neither a retry hint nor a quota. Clients read it from the
    ``grpc-status-details-bin`` trailer (``grpc_status.rpc_status.from_call`` does)."""
    if error.retry_after_s is None and not error.quota_subject:
        return None
    status = status_pb2.Status(code=code_pb2.RESOURCE_EXHAUSTED, message=error.message)
    if error.retry_after_s is not None:
        delay = duration_pb2.Duration()
        delay.FromNanoseconds(max(0, round(error.retry_after_s * 1e9)))
        status.details.add().Pack(error_details_pb2.RetryInfo(retry_delay=delay))
    if error.quota_subject:
        violation = error_details_pb2.QuotaFailure.Violation(
            subject=error.quota_subject, description=error.quota_description or error.message
        )
        status.details.add().Pack(error_details_pb2.QuotaFailure(violations=[violation]))
    return status.SerializeToString()


async def _abort_for(error: BaseException, context_: grpc.aio.ServicerContext, method: str) -> None:
    if context_.done():
        # The RPC already ended (the client hung up, or a status went out): a second abort only
        # raises grpc's "Abort already called!" and logs a traceback nobody can act on.
        log.debug("%s ended before its error could be sent: %s", method, type(error).__name__)
        return
    if isinstance(error, ResourceExhausted) and (details := status_details(error)) is not None:
        await context_.abort(error.code, error.message, trailing_metadata=((STATUS_DETAILS_KEY, details),))
    if isinstance(error, VoiceAIError):
        await context_.abort(error.code, error.message)
    if isinstance(error, DecodeError):
        # Raised while reading a request message, e.g. a string field that is not UTF-8.
        await context_.abort(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"a request message could not be parsed ({error}); string fields must be valid UTF-8",
        )
    log.exception("unhandled error in %s", method, exc_info=error)
    await context_.abort(
        grpc.StatusCode.INTERNAL,
        f"internal error in {method} (call id {context.call_id() or 'unknown'}); it was logged",
    )


def rejecting_handler(
    handler: grpc.RpcMethodHandler, code: grpc.StatusCode, message: str
) -> grpc.RpcMethodHandler:
    """A handler of the same kind as ``handler`` that answers every call with ``code``."""
    if handler.response_streaming:

        async def reject_stream(_request: Any, ctx: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            await ctx.abort(code, message)
            yield  # pragma: no cover - abort raises

        return _rebuild(handler, reject_stream)

    async def reject(_request: Any, ctx: grpc.aio.ServicerContext) -> Any:
        await ctx.abort(code, message)

    return _rebuild(handler, reject)


def wrap_handler(
    handler: grpc.RpcMethodHandler,
    method: str,
    enter: Callable[[], object],
    check: Callable[[grpc.aio.ServicerContext], None] | None = None,
    load: Any = None,
) -> grpc.RpcMethodHandler:
    """``handler`` with ``enter()`` run first in the RPC's own task (so context vars it binds are
    seen by the handler and every task it starts), unparsable unary requests answered
    INVALID_ARGUMENT, and domain errors mapped to their status codes. ``check(context)`` runs
    before the handler and may refuse the RPC by raising a ``VoiceAIError`` (the TLS peer check,
    which needs the servicer context). ``load`` (a ``common.load.LoadCounter``) counts the RPC
    while it runs."""
    inner = _inner(handler)
    if inspect.isasyncgenfunction(inner):

        async def stream_behavior(request: Any, sctx: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            enter()
            if load is not None:
                load.started()
            try:
                if isinstance(request, _Undecodable):
                    await _abort_for(request.error, sctx, method)
                try:
                    if check is not None:
                        check(sctx)
                    async for response in inner(request, sctx):
                        yield response
                except grpc.aio.AbortError:
                    raise
                except Exception as error:
                    await _abort_for(error, sctx, method)
            finally:
                if load is not None:
                    load.ended()

        return _rebuild(handler, stream_behavior)

    async def behavior(request: Any, sctx: grpc.aio.ServicerContext) -> Any:
        enter()
        if load is not None:
            load.started()
        try:
            if isinstance(request, _Undecodable):
                await _abort_for(request.error, sctx, method)
            try:
                if check is not None:
                    check(sctx)
                return await inner(request, sctx)
            except grpc.aio.AbortError:
                raise
            except Exception as error:
                await _abort_for(error, sctx, method)
        finally:
            if load is not None:
                load.ended()

    return _rebuild(handler, behavior)


class ContextServerInterceptor(grpc.aio.ServerInterceptor):
    """Requires the tenant (and optionally call) id on every non-exempt RPC and binds them."""

    def __init__(
        self, *, require_call_id: bool = True, tenantless: frozenset[str] = frozenset(), load: Any = None
    ) -> None:
        self._require_call_id = require_call_id
        self._load = load  # common.load.LoadCounter: RPCs in flight (issue 15)
        # Full method names that may omit the tenant (platform RPCs such as ListTenants); the
        # auth interceptor then admits only platform operators.
        self._tenantless = tenantless

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or method.startswith(EXEMPT_PREFIXES):
            return handler
        md = metadata_dict(handler_call_details.invocation_metadata)
        tenant = md.get(context.TENANT_HEADER, "")
        if not tenant and method in self._tenantless:
            ctx0 = context.RequestContext(
                tenant_id="",
                call_id=md.get(context.CALL_HEADER, "") or new_call_id(),
                authorization=md.get(context.AUTHORIZATION_HEADER, ""),
                traceparent=md.get(context.TRACEPARENT_HEADER, ""),
            )
            return wrap_handler(handler, method, lambda: context.bind(ctx0), load=self._load)
        if not tenant:
            return rejecting_handler(
                handler,
                grpc.StatusCode.UNAUTHENTICATED,
                f"missing '{context.TENANT_HEADER}' metadata: every call must name its tenant",
            )
        if not context.valid_id(tenant):
            return rejecting_handler(
                handler,
                grpc.StatusCode.INVALID_ARGUMENT,
                f"'{context.TENANT_HEADER}' must be 1-128 characters of letters, digits, '.', '_',"
                " ':' or '-'",
            )
        call = md.get(context.CALL_HEADER, "")
        if call and not valid_call_id(call):
            return rejecting_handler(
                handler, grpc.StatusCode.INVALID_ARGUMENT, f"'{context.CALL_HEADER}' must be {CALL_ID_RULE}"
            )
        if not call:
            if self._require_call_id:
                return rejecting_handler(
                    handler,
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"missing '{context.CALL_HEADER}' metadata: internal hops must name the call they serve",
                )
            call = new_call_id()
        ctx = context.RequestContext(
            tenant_id=tenant,
            call_id=call,
            authorization=md.get(context.AUTHORIZATION_HEADER, ""),
            traceparent=md.get(context.TRACEPARENT_HEADER, ""),
        )
        return wrap_handler(handler, method, lambda: context.bind(ctx), load=self._load)


def _details_with_context(details: grpc.aio.ClientCallDetails, service: str) -> grpc.aio.ClientCallDetails:
    ctx = context.current()
    if ctx is None:
        return details
    present = {item[0] for item in details.metadata or ()}
    extra = [(k, v) for k, v in ctx.metadata(service) if k not in present]
    if not extra:
        return details
    metadata = grpc.aio.Metadata(*(details.metadata or ()), *extra)
    return grpc.aio.ClientCallDetails(
        details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
    )


class _ToService:
    """Knows the service its calls go to (the audience of the internal token it forwards)."""

    def __init__(self, service: str = "") -> None:
        self.service = service


class _UnaryUnary(_ToService, grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(self, continuation, client_call_details, request):  # type: ignore[no-untyped-def]
        return await continuation(_details_with_context(client_call_details, self.service), request)


class _UnaryStream(_ToService, grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(self, continuation, client_call_details, request):  # type: ignore[no-untyped-def]
        return await continuation(_details_with_context(client_call_details, self.service), request)


class _StreamUnary(_ToService, grpc.aio.StreamUnaryClientInterceptor):
    async def intercept_stream_unary(self, continuation, client_call_details, request_iterator):  # type: ignore[no-untyped-def]
        return await continuation(_details_with_context(client_call_details, self.service), request_iterator)


class _StreamStream(_ToService, grpc.aio.StreamStreamClientInterceptor):
    async def intercept_stream_stream(self, continuation, client_call_details, request_iterator):  # type: ignore[no-untyped-def]
        return await continuation(_details_with_context(client_call_details, self.service), request_iterator)


def context_client_interceptors(service: str = "") -> list[grpc.aio.ClientInterceptor]:
    """Interceptors that copy the bound request context (tenant, call, credential, trace) onto
    every outgoing call. Metadata the caller set explicitly wins.

    grpc.aio files each interceptor object under one call kind only, hence four objects.
    """
    return [_UnaryUnary(service), _UnaryStream(service), _StreamUnary(service), _StreamStream(service)]
