"""The request context: which tenant and which call a piece of work belongs to.

Bound by the server interceptor from gRPC metadata, read by logging, propagated by the client
interceptor to the next hop. Context vars follow asyncio tasks, so every task a handler spawns
inherits them.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from common.auth.principal import Principal

TENANT_HEADER = "x-tenant-id"
CALL_HEADER = "x-call-id"
AUTHORIZATION_HEADER = "authorization"
TRACEPARENT_HEADER = "traceparent"

# Ids are opaque, but bounded and printable so they are safe in logs and Redis keys.
ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")


@dataclass(frozen=True, slots=True)
class RequestContext:
    """Who a request is for: the tenant, the call, and the credential to forward."""

    tenant_id: str
    call_id: str = ""
    # A credential: kept out of repr so a logged context never carries it.
    authorization: str = field(default="", repr=False)
    traceparent: str = ""
    # Set at the edge: mints the credential for the next hop at each outgoing call (a fresh
    # short-lived internal token for that service and call, ``(service, call_id) -> header``)
    # instead of forwarding ``authorization`` as received.
    forward_authorization: Callable[[str, str], str] | None = field(default=None, repr=False, compare=False)

    def metadata(self, service: str = "") -> tuple[tuple[str, str], ...]:
        """The gRPC metadata that carries this context to the next hop, ``service`` (the
        audience of the internal token minted for it)."""
        md: list[tuple[str, str]] = [(TENANT_HEADER, self.tenant_id)]
        if self.call_id:
            md.append((CALL_HEADER, self.call_id))
        authorization = (
            self.forward_authorization(service, self.call_id)
            if self.forward_authorization
            else self.authorization
        )
        if authorization:
            md.append((AUTHORIZATION_HEADER, authorization))
        source = _hooks.traceparent
        traceparent = (source() if source is not None else "") or self.traceparent
        if traceparent:
            md.append((TRACEPARENT_HEADER, traceparent))
        return tuple(md)


# Installed by common.telemetry when tracing is on: the active span's traceparent, so the next
# hop continues the call's trace (None when off: nothing to compute per RPC).
class _Hooks:
    traceparent: Callable[[], str] | None = None


_hooks = _Hooks()


def set_traceparent_source(source: Callable[[], str] | None) -> None:
    """Where ``metadata()`` reads the active span's traceparent (``common.telemetry``)."""
    _hooks.traceparent = source


_current: ContextVar[RequestContext | None] = ContextVar("voiceai_request", default=None)
_principal: ContextVar[Principal | None] = ContextVar("voiceai_principal", default=None)


def current() -> RequestContext | None:
    """The request context bound to this task, if any."""
    return _current.get()


def bind(ctx: RequestContext) -> None:
    """Bind ``ctx`` for the current task (and tasks it creates from now on)."""
    _current.set(ctx)


def tenant_id() -> str:
    """The bound tenant id (empty when none is bound)."""
    ctx = _current.get()
    return ctx.tenant_id if ctx else ""


def call_id() -> str:
    """The bound call id (empty when none is bound)."""
    ctx = _current.get()
    return ctx.call_id if ctx else ""


def principal() -> Principal | None:
    """Who is calling: bound by ``common.auth``'s server interceptor, None where it is not used."""
    return _principal.get()


def bind_principal(value: Principal | None) -> None:
    """Bind the authenticated principal to this task's context."""
    _principal.set(value)


def valid_id(value: str) -> bool:
    """Whether ``value`` is a well-formed tenant or call id."""
    return bool(ID_PATTERN.match(value))
