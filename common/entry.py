"""The shared ``python -m <service>`` entry: flags, logging, Consul registration when configured,
serve until SIGTERM, drain."""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable

from common import logs, telemetry
from common.consul import register_with_consul
from common.server import ServiceHost, run
from common.settings import ServiceSettings
from common.tls import process_tls


def check_tls_or_exit(parser: argparse.ArgumentParser) -> None:
    """Refuse to start (exit 2, the setting named) when the TLS settings are unusable, before
    any engine loads; logs the plaintext warning when ``VOICEAI_TLS=off``."""
    try:
        process_tls()
    except ValueError as error:
        parser.exit(2, f"{parser.prog}: {error}\n")


def serve_main(
    name: str,
    settings: ServiceSettings,
    default_port: int,
    build: Callable[[ServiceSettings], Awaitable[ServiceHost]],
) -> None:
    """Parse ``--port``, configure logs, build the host (engines load before SERVING), serve."""
    parser = argparse.ArgumentParser(prog=f"python -m {name}")
    parser.add_argument("--port", type=int, help=f"gRPC port (default $VOICEAI_PORT or {default_port})")
    args = parser.parse_args()
    if args.port is not None:
        settings.port = args.port
    elif settings.port == 0:
        settings.port = default_port
    logs.configure(name.replace("_svc", ""), settings.log_level, settings.log_format)
    check_tls_or_exit(parser)
    telemetry.setup(name.replace("_svc", ""))

    async def main() -> None:
        host = await build(settings)
        register_with_consul(host, name)
        await host.start()
        await host.serve_until_signal()

    run(main, settings)
