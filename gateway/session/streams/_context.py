"""The request context every stream to the next hop carries as explicit metadata."""

from __future__ import annotations

from common import context


def call_metadata(service: str) -> tuple[tuple[str, str], ...] | None:
    """The bound request context (tenant, call, credential, trace) for the next hop.

    ``service`` names that hop: the internal token minted for it carries it as its audience.
    """
    ctx = context.current()
    return ctx.metadata(service) if ctx is not None else None
