"""``python -m gateway.livekit``: the gateway as a LiveKit agent worker (Converse keeps serving).

Needs LIVEKIT_URL, LIVEKIT_API_KEY and LIVEKIT_API_SECRET; the rest is the gateway's usual
configuration (VOICEAI_*) plus VOICEAI_LIVEKIT_* (see ``settings.LiveKitSettings``).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

from common import logs, telemetry
from common.consul import register_with_consul
from common.entry import check_tls_or_exit
from common.server import run
from gateway.app import DEFAULT_PORT, Settings, build_app
from gateway.livekit.service import LiveKitGateway
from gateway.livekit.settings import LiveKitCredentials, LiveKitSettings, MissingCredential


def main() -> None:
    """Run the gateway as a LiveKit agent worker until SIGTERM/SIGINT, then drain."""
    parser = argparse.ArgumentParser(prog="python -m gateway.livekit", description=__doc__)
    parser.add_argument("--port", type=int, help=f"gRPC port (default $VOICEAI_PORT or {DEFAULT_PORT})")
    args = parser.parse_args()
    try:
        creds = LiveKitCredentials().require()
    except MissingCredential as e:
        print(f"python -m gateway.livekit: {e}", file=sys.stderr)
        sys.exit(2)
    settings = Settings()
    settings.port = args.port if args.port is not None else (settings.port or DEFAULT_PORT)
    logs.configure("gateway", settings.log_level, settings.log_format)
    check_tls_or_exit(parser)
    telemetry.setup("gateway")

    async def serve() -> None:
        gateway = LiveKitGateway(build_app(settings), creds, LiveKitSettings())
        register_with_consul(gateway.app.host, "gateway")
        await gateway.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await gateway.drain()

    run(serve, settings)


if __name__ == "__main__":
    main()
