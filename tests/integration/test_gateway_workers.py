"""``python -m gateway --workers 2`` as real processes: calls spread over the workers, SIGTERM
drains every worker without cutting a call, and a worker that dies is replaced while only its
own calls end (UNAVAILABLE for their callers, a log line naming the worker)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc.aio
import psutil
import pytest

from common.gen.voiceai.gateway.v1 import gateway_pb2
from tests.bench import procs
from tests.bench.callers import listening_workers, speech_services, wait_listening
from tests.caller import ConverseCaller
from tests.doubles.mesh_services import tone
from tests.integration.consul_harness import TOKEN, consul_double
from tests.integration.gateway_harness import inline_config
from tests.integration.test_failover_processes import ENV

pytestmark = pytest.mark.slow  # six Python processes and real-time calls

CALLS = 12  # both workers get some: all on one would take 2 in 2**12 connection hashes
OWN_CONNECTION = [("grpc.use_local_subchannel_pool", 1)]


@contextlib.contextmanager
def _mesh(log: Path, metrics_port: int = -1) -> Iterator[procs.Proc]:
    with speech_services(ENV) as (_services, services_env):
        gw_env = {
            **services_env,
            "VOICEAI_GRACE_PERIOD_S": "60",
            "VOICEAI_LOG_LEVEL": "INFO",
            "VOICEAI_METRICS_PORT": str(metrics_port),
        }
        args = ("--workers", "2")
        with procs.start("gateway", "gateway", gw_env, log_path=str(log), args=args) as gw:
            wait_listening(gw, 2)  # SERVING as soon as the first one is
            yield gw


def _active_calls(metrics_port: int) -> dict[str, float]:
    """The group's /metrics: calls in progress per worker pid."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
    found = re.findall(r'^voiceai_gateway_active_calls\{pid="(\d+)"\} (\S+)$', text, re.M)
    return {pid: float(v) for pid, v in found}


def _workers(gw: procs.Proc) -> list[psutil.Process]:
    return gw.ps.children()


def _calls_on(worker: psutil.Process, port: int) -> int:
    """Callers' connections this worker accepted."""
    return sum(
        1
        for c in worker.net_connections(kind="tcp")
        if c.status == psutil.CONN_ESTABLISHED and c.laddr and c.laddr.port == port
    )


@contextlib.asynccontextmanager
async def _callers(address: str, n: int) -> AsyncIterator[list[ConverseCaller]]:
    """``n`` calls, each on its own connection (as independent callers), all started."""
    async with contextlib.AsyncExitStack() as stack:
        callers = []
        for _ in range(n):
            ch = await stack.enter_async_context(grpc.aio.insecure_channel(address, options=OWN_CONNECTION))
            caller = ConverseCaller(ch, inline_config(end_of_turn_silence_ms=500))
            callers.append(await stack.enter_async_context(caller))
        await asyncio.gather(*(c.wait_for(lambda c: c.of("call_started"), timeout=20) for c in callers))
        yield callers


async def _one_turn_and_hangup(caller: ConverseCaller, speak: bool = False) -> gateway_pb2.CallEnded:
    if speak:
        await caller.send_pcm(tone(900))
    await caller.wait_for(caller.turn_done(1), timeout=30)
    return await caller.hangup(timeout=10)


async def test_calls_spread_over_workers_and_sigterm_drains_them_all(tmp_path: Path) -> None:
    metrics_port = procs.free_port()
    with _mesh(tmp_path / "gateway.log", metrics_port) as gw:
        port = int(gw.address.rsplit(":", 1)[1])
        workers = _workers(gw)
        assert len(workers) == 2
        async with _callers(gw.address, CALLS) as callers:
            per_worker = [_calls_on(w, port) for w in workers]
            assert sum(per_worker) == CALLS and all(per_worker), per_worker
            # One endpoint for the group: each worker's gauge, labelled with its pid.
            active = await asyncio.to_thread(_active_calls, metrics_port)
            assert active == {str(w.pid): float(n) for w, n in zip(workers, per_worker, strict=True)}
            await asyncio.gather(*(c.send_pcm(tone(900)) for c in callers))
            gw.popen.send_signal(signal.SIGTERM)  # mid-turn on every call
            ended = await asyncio.gather(*(_one_turn_and_hangup(c) for c in callers))
        code = await asyncio.to_thread(gw.popen.wait, 30)
    assert [e.reason for e in ended] == [gateway_pb2.END_REASON_CALLER_HANGUP] * CALLS
    assert all(e.turns == 1 for e in ended)
    assert code == 0
    assert not any(w.is_running() and w.status() != psutil.STATUS_ZOMBIE for w in workers)
    log = (tmp_path / "gateway.log").read_text()
    assert log.count("draining: NOT_SERVING") == 2 and "all workers stopped" in log


async def test_a_killed_worker_is_replaced_and_only_its_calls_end(tmp_path: Path) -> None:
    metrics_port = procs.free_port()
    with _mesh(tmp_path / "gateway.log", metrics_port) as gw:
        port = int(gw.address.rsplit(":", 1)[1])
        victim, survivor = _workers(gw)
        async with _callers(gw.address, CALLS) as callers:
            on_victim = _calls_on(victim, port)
            assert 0 < on_victim < CALLS
            victim.kill()
            outcomes = await asyncio.gather(
                *(_one_turn_and_hangup(c, speak=True) for c in callers), return_exceptions=True
            )
            # The RPC's own status: UNAVAILABLE (the connection is gone), or INTERNAL when the
            # caller's write races the reset (grpc.aio's client, grpc/grpc#36066).
            cut = [
                await asyncio.wait_for(c.call.code(), 10)
                for c, o in zip(callers, outcomes, strict=True)
                if isinstance(o, BaseException)
            ]
            kept = [o for o in outcomes if isinstance(o, gateway_pb2.CallEnded)]
        assert len(cut) == on_victim and len(kept) == CALLS - on_victim
        assert set(cut) <= {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL}, cut
        assert all(e.reason == gateway_pb2.END_REASON_CALLER_HANGUP and e.turns == 1 for e in kept)

        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            pids = {w.pid for w in listening_workers(gw)}  # the replacement is up once it listens
            if len(pids) == 2 and victim.pid not in pids:
                break
            await asyncio.sleep(0.2)
        assert survivor.pid in pids and len(pids) == 2, pids
        # The dead worker's calls no longer count on /metrics (the HPA's signal); the new one's do.
        active = await asyncio.to_thread(_active_calls, metrics_port)
        assert set(active) == {str(p) for p in pids}, active
        async with _callers(gw.address, 4) as callers:  # the group serves new calls again
            ended = await asyncio.gather(*(_one_turn_and_hangup(c, speak=True) for c in callers))
        assert [e.reason for e in ended] == [gateway_pb2.END_REASON_CALLER_HANGUP] * 4
    log = (tmp_path / "gateway.log").read_text()
    assert f"gateway worker 0 (pid {victim.pid}) died (signal SIGKILL)" in log or (
        f"gateway worker 1 (pid {victim.pid}) died (signal SIGKILL)" in log
    )


def test_a_worker_that_cannot_start_stops_the_group_with_the_reason() -> None:
    env = {**os.environ, "PYTHONPATH": procs.ROOT, "VOICEAI_AUTH_MODE": "jwt"}  # jwt without a key
    argv = [sys.executable, "-m", "gateway", "--port", "0", "--workers", "2"]
    done = subprocess.run(
        argv, check=False, env=env, cwd=procs.ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1
    assert "jwt mode needs exactly one of" in done.stderr  # the worker's own error
    assert re.search(r"gateway worker \d \(pid \d+\) failed to start \(exit code 1\)", done.stderr)


def test_the_group_registers_once_in_consul_and_deregisters_before_draining() -> None:
    with consul_double() as api:
        env = {
            **os.environ,
            "PYTHONPATH": procs.ROOT,
            "CONSUL_HTTP_ADDR": f"http://{api.address}",
            "CONSUL_HTTP_TOKEN": TOKEN,
            "VOICEAI_CONSUL_CHECK_INTERVAL": "1s",
        }
        port = procs.free_port()
        argv = [sys.executable, "-m", "gateway", "--port", str(port), "--workers", "2"]
        proc = subprocess.Popen(argv, env=env, cwd=procs.ROOT, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 60
            while (
                not api.instances("voiceai-gateway") and time.monotonic() < deadline and proc.poll() is None
            ):
                time.sleep(0.05)
            time.sleep(0.5)  # a second registration (one per worker) would have come by now
            [svc] = api.instances("voiceai-gateway")
            assert svc["Port"] == port and len(psutil.Process(proc.pid).children()) == 2
            api.check_now()  # the agent's gRPC health check reaches a worker on the shared port
            assert api.checks[f"service:{svc['ID']}"]["Status"] == "passing"
            proc.send_signal(signal.SIGTERM)
            _out, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert proc.returncode == 0, err
    assert [e[1:] for e in api.events if e[1] in ("register", "deregister")] == [
        ("register", svc["ID"]),
        ("deregister", svc["ID"]),
    ]
