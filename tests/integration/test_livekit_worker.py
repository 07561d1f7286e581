"""The LiveKit worker around real ``livekit-agents`` machinery, without a LiveKit server: the
AgentServer runs unregistered, jobs come from its own ``simulate_job`` and go through the real
thread executor into our job entry, which hands them to the test's loop. Load is what the
worker's HTTP endpoint reports; drain stops new jobs and waits for running calls. And the
worker refuses to start without its credentials, naming the missing variable."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import aiohttp
import pytest
from livekit.agents import JobRequest
from livekit.protocol import agent, models

from gateway.livekit.room import JobTicket
from gateway.livekit.settings import LiveKitCredentials, LiveKitSettings
from gateway.livekit.worker import LiveKitWorker

CREDS = LiveKitCredentials(
    url="ws://127.0.0.1:1", api_key="APItest", api_secret="test-secret-not-real-0123456789abcdef"
)


@dataclass
class HeldCalls:
    """Stands in for RoomCalls: each job is a call that lasts until the test releases it."""

    active: int = 0
    tickets: list[JobTicket] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    started: asyncio.Event = field(default_factory=asyncio.Event)
    cancelled: int = 0

    async def run(self, ticket: JobTicket) -> str:
        self.active += 1
        self.tickets.append(ticket)
        self.started.set()
        try:
            await self.release.wait()
            return "caller_hangup"
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        finally:
            self.active -= 1


@pytest.fixture(autouse=True)
def livekit_env() -> Iterator[None]:
    """AgentServer.run exports its credentials to the environment; later tests (tenant_svc turns
    LiveKit provisioning on when they are set) must not see them."""
    saved = {k: v for k, v in os.environ.items() if k.startswith("LIVEKIT_")}
    for name in saved:
        del os.environ[name]
    try:
        yield
    finally:
        for name in [k for k in os.environ if k.startswith("LIVEKIT_")]:
            del os.environ[name]
        os.environ.update(saved)


@pytest.fixture
async def worker() -> AsyncIterator[tuple[LiveKitWorker, HeldCalls]]:
    calls = HeldCalls()
    lk = LiveKitWorker(
        calls,
        CREDS,
        LiveKitSettings(max_calls=4, drain_timeout_s=30, http_host="127.0.0.1", http_port=0),
        calls.run,
    )
    await lk.start(register=False)
    try:
        yield lk, calls
    finally:
        calls.release.set()
        await lk.drain()


async def reported_load(lk: LiveKitWorker, want: float) -> dict[str, object]:
    """The worker's /worker report once it shows ``want`` (the load is sampled every 0.5 s)."""
    url = f"http://127.0.0.1:{lk.server.worker_info.http_port}/worker"
    async with aiohttp.ClientSession() as http:
        for _ in range(50):
            async with http.get(url) as reply:
                report: dict[str, object] = await reply.json(content_type=None)
            if abs(float(report.get("worker_load", 0.0)) - want) < 1e-6:  # type: ignore[arg-type]
                return report
            await asyncio.sleep(0.1)
    raise AssertionError(f"load never reached {want}: {report}")


def offer(job_id: str) -> tuple[JobRequest, list[str]]:
    answers: list[str] = []

    async def on_reject(terminate: bool) -> None:
        answers.append(f"reject terminate={terminate}")

    async def on_accept(args: object) -> None:
        answers.append("accept")

    job = agent.Job(id=job_id, room=models.Room(name=f"room-{job_id}"), type=agent.JobType.JT_ROOM)
    return JobRequest(job=job, on_reject=on_reject, on_accept=on_accept), answers


async def test_a_job_runs_on_the_gateway_loop_and_the_load_is_reported(
    worker: tuple[LiveKitWorker, HeldCalls],
) -> None:
    lk, calls = worker
    await reported_load(lk, 0.0)
    await lk.server.simulate_job("room-a", fake_job=True, agent_identity="voiceai-agent-1")
    await asyncio.wait_for(calls.started.wait(), 10)
    assert calls.tickets[0].room == "room-a" and calls.tickets[0].claims.identity == "voiceai-agent-1"
    assert lk.load() == 0.25
    report = await reported_load(lk, 0.25)  # 1 call of 4
    assert report["active_jobs"] == 1
    request, answers = offer("j-ok")
    await lk._on_request(request)  # noqa: SLF001 - the request handler LiveKit's offers reach
    assert answers == ["accept"]
    calls.release.set()
    for _ in range(100):
        if not lk.server.active_jobs:
            break
        await asyncio.sleep(0.05)
    assert not lk.server.active_jobs and calls.active == 0  # the job ended with its call
    await reported_load(lk, 0.0)


async def test_a_full_worker_turns_offers_to_other_workers(worker: tuple[LiveKitWorker, HeldCalls]) -> None:
    lk, calls = worker
    calls.active = lk.settings.max_calls
    assert lk.load() == 1.0
    request, answers = offer("j-full")
    await lk._on_request(request)  # noqa: SLF001 - the request handler LiveKit's offers reach
    assert answers == ["reject terminate=False"]  # not terminate: LiveKit tries another worker
    calls.active = 0


async def test_drain_takes_no_new_job_and_lets_the_call_finish(
    worker: tuple[LiveKitWorker, HeldCalls],
) -> None:
    lk, calls = worker
    await lk.server.simulate_job("room-b", fake_job=True, agent_identity="voiceai-agent-2")
    await asyncio.wait_for(calls.started.wait(), 10)
    drain = asyncio.create_task(lk.drain())
    await asyncio.sleep(0.5)
    assert lk.server.draining and not drain.done()  # the call is still running
    request, answers = offer("j-late")
    await lk._on_request(request)  # noqa: SLF001 - the request handler LiveKit's offers reach
    assert answers == ["reject terminate=False"]
    calls.release.set()
    await asyncio.wait_for(drain, 10)
    assert calls.cancelled == 0 and calls.active == 0  # it ended by itself


async def test_drain_ends_calls_still_running_at_its_deadline() -> None:
    calls = HeldCalls()
    lk = LiveKitWorker(
        calls,
        CREDS,
        LiveKitSettings(max_calls=2, drain_timeout_s=1, http_host="127.0.0.1", http_port=0),
        calls.run,
    )
    await lk.start(register=False)
    await lk.server.simulate_job("room-c", fake_job=True, agent_identity="voiceai-agent-3")
    await asyncio.wait_for(calls.started.wait(), 10)
    await asyncio.wait_for(lk.drain(), 20)
    assert calls.cancelled == 1 and calls.active == 0


def run_worker_without(variable: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIVEKIT_")}
    env |= {
        "LIVEKIT_URL": "ws://127.0.0.1:1",
        "LIVEKIT_API_KEY": "APIvisible",
        "LIVEKIT_API_SECRET": "s3cret-value-must-not-show",
    }
    del env[variable]
    return subprocess.run(
        [sys.executable, "-m", "gateway.livekit"],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("variable", ["LIVEKIT_URL", "LIVEKIT_API_KEY", "LIVEKIT_API_SECRET"])
def test_the_worker_refuses_to_start_without_a_credential(variable: str) -> None:
    done = run_worker_without(variable)
    assert done.returncode == 2
    assert variable in done.stderr and "is not set" in done.stderr
    assert "s3cret-value-must-not-show" not in done.stderr + done.stdout
