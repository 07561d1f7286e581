"""One error hierarchy for the mesh, mapped to gRPC status codes at the server boundary.

Domain code raises these; ``common.interceptors`` turns them into a status with the message as
written, so messages must say what to fix and must not carry tenant data.
"""

from __future__ import annotations

import grpc


class VoiceAIError(Exception):
    """Base class. ``code`` is the gRPC status; ``retryable`` says whether retrying may help."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL
    retryable: bool = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(VoiceAIError):
    """The request is malformed (INVALID_ARGUMENT)."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class FailedPrecondition(VoiceAIError):
    """The system is not in a state to serve the request (FAILED_PRECONDITION)."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class Unauthenticated(VoiceAIError):
    """The credential is missing or not accepted (UNAUTHENTICATED)."""

    code = grpc.StatusCode.UNAUTHENTICATED


class AlreadyExists(VoiceAIError):
    """The resource exists already (ALREADY_EXISTS)."""

    code = grpc.StatusCode.ALREADY_EXISTS


class PermissionDenied(VoiceAIError):
    """The caller may not do this (PERMISSION_DENIED)."""

    code = grpc.StatusCode.PERMISSION_DENIED


class NotFound(VoiceAIError):
    """The resource does not exist, or not in this tenant (NOT_FOUND)."""

    code = grpc.StatusCode.NOT_FOUND


class ResourceExhausted(VoiceAIError):
    """Over a limit. ``retry_after_s`` says when trying again may succeed; ``quota_subject``
    (e.g. ``"concurrent_calls"``) names the quota that was hit. Both travel to the client as
    ``google.rpc`` RetryInfo / QuotaFailure details."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    retryable = True

    def __init__(
        self,
        message: str,
        *,
        retry_after_s: float | None = None,
        quota_subject: str = "",
        quota_description: str = "",
    ) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
        self.quota_subject = quota_subject
        self.quota_description = quota_description


class Unavailable(VoiceAIError):
    """A dependency cannot be reached now; retry (UNAVAILABLE)."""

    code = grpc.StatusCode.UNAVAILABLE
    retryable = True


class DeadlineExceeded(VoiceAIError):
    """The work did not finish in time (DEADLINE_EXCEEDED)."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED
    retryable = True


class EngineError(VoiceAIError):
    """A provider/engine failed while serving a request."""

    code = grpc.StatusCode.INTERNAL
