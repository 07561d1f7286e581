"""``python -m tenant_svc.rest [--port N]``: the REST front and portal under uvicorn."""

from __future__ import annotations

import argparse

import uvicorn

from common import logs
from tenant_svc.rest.front import build_app
from tenant_svc.rest.local import die_with_parent
from tenant_svc.rest.settings import RestSettings


def main() -> None:
    """Parse ``--port``, configure logs, serve until SIGINT/SIGTERM (uvicorn drains open requests)."""
    settings = RestSettings()
    parser = argparse.ArgumentParser(prog="python -m tenant_svc.rest")
    parser.add_argument("--port", type=int, help=f"HTTP port (default $VOICEAI_REST_PORT or {settings.port})")
    parser.add_argument(
        "--tenant-address", help="tenant_svc gRPC address (default $VOICEAI_REST_TENANT_ADDRESS)"
    )
    args = parser.parse_args()
    if args.port is not None:
        settings.port = args.port
    if args.tenant_address:
        settings.tenant_address = args.tenant_address
    logs.configure("rest", settings.log_level, settings.log_format)
    if settings.parent_pid:
        die_with_parent(settings.parent_pid)
    uvicorn.run(
        build_app(settings),
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=10,
        server_header=False,
    )


if __name__ == "__main__":
    main()
