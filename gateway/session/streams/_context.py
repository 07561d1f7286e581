"""The request context every stream to the next hop carries as explicit metadata."""

from __future__ import annotations

from common import context


def call_metadata() -> tuple[tuple[str, str], ...] | None:
    """The bound request context (tenant, call, credential, trace) for the next hop."""
    ctx = context.current()
    return ctx.metadata() if ctx is not None else None
