"""``python -m gateway --port N [--workers W]``: run the call gateway (services found via discovery).

``--workers`` (default: the cores this process may use) > 1 runs a supervisor and that many
worker processes sharing the port (``gateway.workers``); 1 runs the gateway in this process.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from common import logs, telemetry
from common.consul import register_with_consul
from common.entry import check_tls_or_exit
from common.server import run
from gateway.app import DEFAULT_PORT, Settings, build_app
from gateway.workers import Supervisor, WorkerRole, default_workers, freeze_after_start

log = logging.getLogger("gateway")


def main() -> None:
    """Run the gateway until SIGTERM/SIGINT, then drain."""
    parser = argparse.ArgumentParser(prog="python -m gateway", description=__doc__)
    parser.add_argument("--port", type=int, help=f"gRPC port (default $VOICEAI_PORT or {DEFAULT_PORT})")
    parser.add_argument(
        "--workers",
        type=int,
        help="gateway processes sharing the port (default $VOICEAI_WORKERS, else the usable cores)",
    )
    for hidden in ("--worker-index", "--worker-of", "--ready-fd"):  # set by the supervisor
        parser.add_argument(hidden, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    settings = Settings()
    if args.port is not None:
        settings.port = args.port
    elif settings.port == 0:
        settings.port = DEFAULT_PORT
    role = None
    if args.worker_of is not None:
        role = WorkerRole(args.worker_index, args.worker_of, args.ready_fd)
        role.die_with_supervisor()
        settings.reuse_port = True
        settings.worker_index = args.worker_index  # its own record outbox, replayed by its replacement
        settings.metrics_port = -1  # the supervisor serves the group's metrics
    logs.configure("gateway", settings.log_level, settings.log_format)
    check_tls_or_exit(parser)
    telemetry.setup("gateway")
    workers = args.workers or settings.workers or default_workers()
    if role is None and workers > 1:
        supervisor = Supervisor(settings, workers, [sys.executable, "-m", "gateway"])
        sys.exit(asyncio.run(supervisor.run()))

    async def serve() -> None:
        app = build_app(settings)
        if role is None:
            register_with_consul(app.host, "gateway")  # a worker's group registers once
        await app.start()
        freeze_after_start()
        if role is not None:
            role.report_ready()
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
