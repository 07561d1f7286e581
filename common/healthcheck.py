"""Client side of the standard health service: wait until an address reports SERVING."""

from __future__ import annotations

import time
from collections.abc import Callable

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from common.tls import ChannelFactory, TlsConfig, process_channels


def _channel(address: str, server_name: str, tls: TlsConfig | None) -> grpc.Channel:
    # TLS per VOICEAI_TLS_* unless given (health checks too).
    creds = (ChannelFactory(tls) if tls is not None else process_channels()).credentials()
    if creds is None:
        return grpc.insecure_channel(address)
    options = [("grpc.ssl_target_name_override", server_name)] if server_name else []
    return grpc.secure_channel(address, creds, options=options)


def wait_serving(
    address: str,
    timeout: float,
    alive: Callable[[], bool] = lambda: True,
    *,
    server_name: str = "",
    tls: TlsConfig | None = None,
) -> None:
    """Block until ``address`` answers SERVING; RuntimeError if ``alive()`` turns false or time runs
    out. ``server_name``: the identity the server's certificate must carry (TLS)."""
    deadline = time.monotonic() + timeout
    with _channel(address, server_name, tls) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            if not alive():
                raise RuntimeError(f"the process for {address} exited before it was ready (see its log)")
            try:
                if (
                    stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status
                    == health_pb2.HealthCheckResponse.SERVING
                ):
                    return
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{address} did not become SERVING within {timeout:.0f} s")
            time.sleep(0.1)
