"""gRPC status -> HTTP: the status code table of ``google/rpc/code.proto`` and a google.rpc.Status body.

The body is the proto3 JSON of ``google.rpc.Status`` (``code`` is the gRPC code number,
``message`` the server's words, ``details`` the typed details such as RetryInfo and
QuotaFailure, each with its ``@type``). ``Retry-After`` is set from RetryInfo when present.
"""

from __future__ import annotations

import math
from typing import Any

import grpc
from google.protobuf import json_format
from google.rpc import code_pb2, error_details_pb2, status_pb2

# The mapping documented in google/rpc/code.proto (and used by Google's own HTTP front ends).
HTTP_STATUS: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
}
STATUS_DETAILS_KEY = "grpc-status-details-bin"


class HttpError(Exception):
    """An error answered before or instead of the RPC: its HTTP status and google.rpc.Status."""

    def __init__(
        self, http_status: int, code: grpc.StatusCode, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.http_status = http_status
        self.status = status_pb2.Status(code=code.value[0], message=message)
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        """The google.rpc.Status as JSON."""
        return status_json(self.status)


def status_json(status: status_pb2.Status) -> dict[str, Any]:
    """``status`` in proto3 JSON, ``code`` always present; unknown detail types are dropped."""
    known = status_pb2.Status(code=status.code, message=status.message)
    for detail in status.details:
        try:
            json_format.MessageToDict(detail)
        except (TypeError, KeyError):  # a detail type this process does not know
            continue
        known.details.add().CopyFrom(detail)
    data = json_format.MessageToDict(known)
    data["code"] = status.code
    return data


def _trailer_status(error: grpc.aio.AioRpcError) -> status_pb2.Status | None:
    for key, value in error.trailing_metadata() or ():
        if key == STATUS_DETAILS_KEY and isinstance(value, bytes):
            status = status_pb2.Status()
            try:
                status.ParseFromString(value)
            except Exception:  # a malformed trailer: fall back to code and message
                return None
            return status
    return None


def _retry_after(status: status_pb2.Status) -> str | None:
    for detail in status.details:
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            detail.Unpack(info)
            delay = info.retry_delay.seconds + info.retry_delay.nanos / 1e9
            return str(max(1, math.ceil(delay)))
    return None


def from_rpc_error(error: grpc.aio.AioRpcError) -> HttpError:
    """The HTTP answer for a failed RPC: mapped status, Status body with details, Retry-After."""
    code = error.code()
    status = _trailer_status(error) or status_pb2.Status(
        code=code.value[0], message=error.details() or code.name
    )
    out = HttpError(HTTP_STATUS.get(code, 500), code, status.message)
    out.status.CopyFrom(status)
    if (after := _retry_after(status)) is not None:
        out.headers["Retry-After"] = after
    return out


def code_name(number: int) -> str:
    """``5`` -> ``NOT_FOUND``."""
    return str(code_pb2.Code.Name(number))
