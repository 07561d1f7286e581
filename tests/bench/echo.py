"""Transport floor: a bare grpc.aio echo at the caller edge's message rate, no mesh behind it.

    python -m tests.bench.echo [--streams 10,100,200] [--seconds 8]

N bidirectional streams each send one 640-byte message every 20 ms (real-time, spread over the
frame period like the gateway benchmark's callers) to a server (uvloop, its own process) that
echoes every k-th message back (``--reply-every``; 3 is about the gateway's share of agent
audio in the benchmark's calls). Reported: round-trip time p50/p99/max, and CPU of the server and of
the callers. The gateway's caller edge carries at most this traffic (50 messages/s each way per
call, and outbound only while the agent speaks), so this is the least any Converse gateway in
grpc.aio can cost on this machine, and the latency a hop adds when nothing else runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import time

import numpy as np

from tests.bench import procs

METHOD = "/bench.Echo/Echo"
FRAME = bytes(640)


def serve(port: int, reply_every: int) -> None:
    import grpc
    import grpc.aio
    import uvloop

    async def echo(request_iterator, context):  # type: ignore[no-untyped-def]
        k = 0
        async for msg in request_iterator:
            if k % reply_every == 0:
                yield msg
            k += 1

    async def main() -> None:
        server = grpc.aio.server()
        handler = grpc.method_handlers_generic_handler(
            "bench.Echo", {"Echo": grpc.stream_stream_rpc_method_handler(echo)}
        )
        server.add_generic_rpc_handlers((handler,))
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        print("ready", flush=True)
        await server.wait_for_termination()

    uvloop.run(main())


async def _streams(address: str, n: int, seconds: float, start_at: float, reply_every: int) -> list[float]:
    import grpc.aio

    rtts: list[float] = []

    async def one(i: int, channel: grpc.aio.Channel) -> None:
        call = channel.stream_stream(METHOD)()
        sent: list[float] = []
        next_at = start_at + random.Random(i).uniform(0.0, 0.02)
        end = start_at + seconds

        async def read() -> None:
            k = 0
            async for _ in call:
                rtts.append(time.monotonic() - sent[k])
                k += reply_every

        reader = asyncio.get_running_loop().create_task(read())
        while next_at < end:
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            sent.append(time.monotonic())
            await call.write(FRAME)
            next_at += 0.02
        await call.done_writing()
        await reader

    async with grpc.aio.insecure_channel(address) as channel:
        await asyncio.gather(*(one(i, channel) for i in range(n)))
    return rtts


def client(address: str, n: int, seconds: float, start_at: float, reply_every: int) -> None:
    import uvloop

    rtts = uvloop.run(_streams(address, n, seconds, start_at, reply_every))
    json.dump([round(r * 1000.0, 3) for r in rtts[len(rtts) // 10 :]], sys.stdout)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tests.bench.echo",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--streams", default="10,100,200")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--streams-per-process", type=int, default=100)
    parser.add_argument(
        "--reply-every",
        type=int,
        default=3,
        help="echo every k-th message (3 ~ an agent speaking a third of the time)",
    )
    args = parser.parse_args(argv)
    port = procs.free_port()
    env = {**os.environ, "PYTHONPATH": procs.ROOT}
    code = "from tests.bench.echo import serve, client; import sys; "
    server = subprocess.Popen(
        [sys.executable, "-c", code + f"serve({port}, {args.reply_every})"], env=env, stdout=subprocess.PIPE
    )
    try:
        assert server.stdout is not None
        server.stdout.readline()
        print(
            f"\n== Transport floor: bare grpc.aio echo, 640-byte messages every 20 ms per stream,"
            f" every {args.reply_every}. echoed ({args.seconds:.0f} s)"
        )
        print(
            f"{'streams':>8} {'RTT p50':>9} {'p99':>7} {'max':>7} {'server cores':>13} {'client cores':>13}"
        )
        for n in (int(x) for x in args.streams.split(",")):
            start_at = time.monotonic() + 1.5
            per = args.streams_per_process
            clients = [
                subprocess.Popen(
                    [
                        sys.executable,
                        "-c",
                        code + f"client('127.0.0.1:{port}', {min(per, n - i)}, {args.seconds}, {start_at},"
                        f" {args.reply_every})",
                    ],
                    env=env,
                    stdout=subprocess.PIPE,
                )
                for i in range(0, n, per)
            ]
            ps = procs.psutil.Process(server.pid)
            time.sleep(max(0.0, start_at - time.monotonic()))
            cpu0 = sum(ps.cpu_times()[:2])
            c0 = os.times()
            t0 = time.monotonic()
            rtts: list[float] = []
            for c in clients:
                assert c.stdout is not None
                rtts += json.loads(c.stdout.read())
                c.wait()
            wall = time.monotonic() - t0
            c1 = os.times()
            server_cores = (sum(ps.cpu_times()[:2]) - cpu0) / wall
            client_cores = (
                c1.children_user + c1.children_system - c0.children_user - c0.children_system
            ) / wall
            print(
                f"{n:>8} {np.percentile(rtts, 50):>7.2f}ms {np.percentile(rtts, 99):>5.1f}ms"
                f" {max(rtts):>5.0f}ms {server_cores:>13.2f} {client_cores:>13.2f}"
            )
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
