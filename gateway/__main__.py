"""``python -m gateway --port N``: run the call gateway (services found via discovery)."""

from __future__ import annotations

import argparse
import asyncio
import logging

from common import logs, telemetry
from common.consul import register_with_consul
from common.server import run
from gateway.app import DEFAULT_PORT, Settings, build_app

log = logging.getLogger("gateway")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m gateway", description=__doc__)
    parser.add_argument("--port", type=int, help=f"gRPC port (default $VOICEAI_PORT or {DEFAULT_PORT})")
    args = parser.parse_args()
    settings = Settings()
    if args.port is not None:
        settings.port = args.port
    elif settings.port == 0:
        settings.port = DEFAULT_PORT
    logs.configure("gateway", settings.log_level, settings.log_format)
    telemetry.setup("gateway")

    async def serve() -> None:
        app = build_app(settings)
        register_with_consul(app.host, "gateway")
        await app.start()
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        import signal

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await app.drain()

    run(serve, settings)


if __name__ == "__main__":
    main()
