"""The one HTTP endpoint behind every route: HTTP request -> RPC -> JSON (or NDJSON / SSE stream).

Credentials pass through unchanged: ``Authorization`` becomes the ``authorization`` metadata and
tenant_svc authenticates and authorizes it exactly as for a gRPC client (the front has no policy
of its own). ``x-tenant-id`` is the request's header when given, else the tenant the resource
name in the path names (``tenants/{tenant}/...``), so a REST client sends only its credential.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import grpc.aio
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from tenant_svc.rest.errors import HttpError, from_rpc_error
from tenant_svc.rest.routes import Route, RouteTable
from tenant_svc.rest.settings import RestSettings
from tenant_svc.rest.transcode import BadRequest, build_request, message_class, render

log = logging.getLogger(__name__)
_FORWARDED = ("authorization", "traceparent", "tracestate")
NDJSON = "application/x-ndjson"
_PRINTABLE = re.compile(r"[\x20-\x7e]*")
SSE = "text/event-stream"


def error_response(error: HttpError) -> JSONResponse:
    """The JSON answer for ``error``."""
    return JSONResponse(error.body(), status_code=error.http_status, headers=error.headers)


def _metadata(request: Request, variables: dict[str, str]) -> tuple[tuple[str, str], ...]:
    out = [(k, request.headers[k]) for k in _FORWARDED if k in request.headers]
    tenant = request.headers.get("x-tenant-id")
    if tenant is None:
        for value in variables.values():
            parts = value.split("/")
            if len(parts) >= 2 and parts[0] == "tenants":
                tenant = parts[1]
                break
    if tenant:
        out.append(("x-tenant-id", tenant))
    for key, value in out:
        if not _PRINTABLE.fullmatch(value):
            raise BadRequest(
                f"the {key} header holds characters gRPC metadata cannot carry (printable ASCII only)"
            )
    return tuple(out)


async def _read_body(request: Request, limit: int) -> bytes:
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HttpError(
                413, grpc.StatusCode.INVALID_ARGUMENT, f"the request body is over the limit of {limit} bytes"
            )
        chunks.append(chunk)
    return b"".join(chunks)


class Transcoder:
    """Serves every route of a ``RouteTable`` by calling tenant_svc over one gRPC channel."""

    def __init__(self, table: RouteTable, channel: grpc.aio.Channel | None, settings: RestSettings) -> None:
        self.table = table
        self.channel = channel
        self.settings = settings
        self._calls: dict[str, Callable[..., Any]] = {}

    def bind(self, channel: grpc.aio.Channel) -> None:
        """Use ``channel`` from now on (opened on the serving loop: a grpc.aio channel is loop-bound)."""
        self.channel = channel
        self._calls.clear()

    def _callable(self, route: Route) -> Callable[..., Any]:
        key = route.full_method
        if self.channel is None:
            raise HttpError(503, grpc.StatusCode.UNAVAILABLE, "the front is not serving yet; retry")
        if key not in self._calls:
            output = message_class(route.method.output_type)
            factory = self.channel.unary_stream if route.server_streaming else self.channel.unary_unary
            self._calls[key] = factory(
                key, request_serializer=_serialize, response_deserializer=output.FromString
            )
        return self._calls[key]

    async def upstream_serving(self) -> bool:
        """Whether tenant_svc's gRPC health says SERVING (1 s deadline)."""
        if self.channel is None:
            return False
        stub = health_pb2_grpc.HealthStub(self.channel)
        try:
            reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=1.0)
        except grpc.aio.AioRpcError:
            return False
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

    async def handle(self, request: Request) -> Response:
        """Answers one HTTP request."""
        try:
            return await self._answer(request)
        except HttpError as e:
            return error_response(e)
        except BadRequest as e:
            return error_response(HttpError(400, grpc.StatusCode.INVALID_ARGUMENT, str(e)))
        except grpc.aio.AioRpcError as e:
            return error_response(from_rpc_error(e))
        except Exception:  # a bug here: answered in the API's error shape, logged without the request
            log.exception("REST front failed on %s %s", request.method, self._template(request))
            return error_response(
                HttpError(500, grpc.StatusCode.INTERNAL, "internal error in the REST front")
            )

    def _template(self, request: Request) -> str:
        found = self.table.find(request.method, request.url.path)
        return found[0].template.template if found else "(no route)"

    async def _answer(self, request: Request) -> Response:
        path = request.url.path
        found = self.table.find(request.method, path)
        if found is None:
            allowed = self.table.allowed(path)
            if allowed:
                raise HttpError(
                    405,
                    grpc.StatusCode.UNIMPLEMENTED,
                    f"{request.method} is not allowed on {path}; use {', '.join(allowed)}",
                    {"Allow": ", ".join(allowed)},
                )
            raise HttpError(404, grpc.StatusCode.NOT_FOUND, f"no API method answers {request.method} {path}")
        route, variables = found
        body = await _read_body(request, self.settings.max_body_bytes)
        message = build_request(route, variables, list(request.query_params.multi_items()), body)
        metadata = _metadata(request, variables)
        if route.server_streaming:
            return await self._stream(request, route, message, metadata)
        result = await self._callable(route)(message, metadata=metadata, timeout=self.settings.rpc_timeout_s)
        return JSONResponse(render(route, result))

    async def _stream(
        self, request: Request, route: Route, message: Message, metadata: tuple[tuple[str, str], ...]
    ) -> Response:
        call = self._callable(route)(message, metadata=metadata, timeout=self.settings.stream_timeout_s)
        sse = SSE in request.headers.get("accept", "")
        try:  # an error before the first message is an ordinary HTTP error
            first = await call.read()
        except BaseException:
            call.cancel()
            raise
        if first is grpc.aio.EOF:
            await call.code()  # raises nothing on OK; AioRpcError surfaced by read() otherwise
            return Response(b"", media_type=SSE if sse else NDJSON)

        async def lines() -> AsyncIterator[bytes]:
            try:
                item = first
                while item is not grpc.aio.EOF:
                    yield _frame(sse, "result", render(route, item))
                    item = await call.read()
            except grpc.aio.AioRpcError as e:
                yield _frame(sse, "error", from_rpc_error(e).body())
            finally:
                call.cancel()  # the client went away, or the stream ended: never left to the GC

        return StreamingResponse(lines(), media_type=SSE if sse else NDJSON)


def _serialize(message: Message) -> bytes:
    return message.SerializeToString()


def _frame(sse: bool, kind: str, data: dict[str, Any]) -> bytes:
    text = json.dumps(data, separators=(",", ":"))
    if sse:
        return f"event: {kind}\ndata: {text}\n\n".encode()
    return (json.dumps({kind: data}, separators=(",", ":")) + "\n").encode()
