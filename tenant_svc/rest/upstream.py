"""The front's channel to tenant_svc: the one place that decides its credentials.

The front dials tenant_svc as the mesh identity ``rest`` (``VOICEAI_TLS_*``: under mTLS its
certificate must name ``rest``; tenant_svc admits only ``gateway`` and ``rest``), and checks
that the server's certificate names ``tenant`` whatever address it dialled. ``VOICEAI_TLS=off``
is plaintext.
"""

from __future__ import annotations

import grpc.aio

from common.tls import process_channels

# Larger than the front's body limit, so a request the front accepted is never refused for size.
_OPTIONS = (("grpc.max_receive_message_length", 16 * 1024 * 1024),)


def open_channel(address: str) -> grpc.aio.Channel:
    """A channel to tenant_svc at ``address``; the caller closes it."""
    return process_channels().channel(address, "tenant", options=_OPTIONS)
