"""The front's channel to tenant_svc: the one place that decides its credentials (plaintext today;
transport security plugs in here)."""

from __future__ import annotations

import grpc.aio

# Larger than the front's body limit, so a request the front accepted is never refused for size.
_OPTIONS = (("grpc.max_receive_message_length", 16 * 1024 * 1024),)


def open_channel(address: str) -> grpc.aio.Channel:
    """A channel to tenant_svc at ``address``; the caller closes it."""
    return grpc.aio.insecure_channel(address, options=_OPTIONS)
