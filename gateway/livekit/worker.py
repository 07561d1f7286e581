"""The gateway as a LiveKit agent worker (``livekit-agents``' ``AgentServer``).

The AgentServer keeps the worker registered, answers job offers and reports load; jobs run in
its thread executor, and each job's entry does one thing: hand the job to the gateway's own
event loop, where ``room.run_room_call`` joins the room and runs the call beside Converse calls
(same channels to stt/llm/tts, same pacer, same tenancy), and wait for it to end.

Load: active room calls / ``max_calls``, with a threshold of 1.0, so LiveKit offers jobs to the
least-loaded worker and none to a full one. Drain (SIGTERM): the worker reports itself full,
takes no new job, and waits up to ``drain_timeout_s`` for running calls to end; calls still
running then are cancelled and recorded as ended by shutdown.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

from livekit.agents import AgentServer, JobContext, JobExecutorType, JobRequest

from common.tasks import cancel_and_wait
from gateway.livekit.room import JobTicket
from gateway.livekit.settings import LiveKitCredentials, LiveKitSettings

log = logging.getLogger(__name__)

RunJob = Callable[[JobTicket], Awaitable[str]]


class CallCount(Protocol):
    """What the load report reads: calls running now (``RoomCalls``)."""

    active: int


class _HandedOffJobs(logging.Filter):
    """Our job entries never call ``JobContext.connect()`` (the room is joined on the gateway's
    loop instead), which livekit-agents reports after 10 s as a likely bug; here it is not."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("The room connection was not established")


class LiveKitWorker:
    """Registers with LiveKit and turns each accepted job into a room call (module docstring)."""

    def __init__(
        self,
        calls: CallCount,
        creds: LiveKitCredentials,
        settings: LiveKitSettings,
        run_job: RunJob,
    ) -> None:
        self.calls = calls
        self.settings = settings
        self._run_job = run_job
        self._loop: asyncio.AbstractEventLoop | None = None
        self._jobs: set[asyncio.Task[str]] = set()
        self._task: asyncio.Task[None] | None = None
        self.draining = False
        self.server = AgentServer(
            job_executor_type=JobExecutorType.THREAD,  # jobs hand off to this process's loop
            load_fnc=self.load,
            load_threshold=1.0,
            num_idle_processes=2,
            drain_timeout=settings.drain_timeout_s,
            ws_url=creds.url,
            api_key=creds.api_key,
            api_secret=creds.api_secret.get_secret_value(),
            host=settings.http_host,
            port=settings.http_port,
        )
        self.server.rtc_session(self._job_entry, agent_name=settings.agent_name, on_request=self._on_request)
        logging.getLogger("livekit.agents").addFilter(_HandedOffJobs())

    # ------------------------------------------------------------------ lifecycle
    async def start(self, *, register: bool = True) -> None:
        """Start the AgentServer on this loop; ``register=False`` runs it without a LiveKit
        connection (jobs then come only from ``server.simulate_job``: tests)."""
        self._loop = asyncio.get_running_loop()
        started = asyncio.Event()
        self.server.on("worker_started", lambda *_: started.set())
        self._task = self._loop.create_task(self.server.run(unregistered=not register), name="livekit-worker")
        waiter = self._loop.create_task(started.wait(), name="livekit-worker-started")
        try:
            await asyncio.wait({self._task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            await cancel_and_wait(waiter)
        if self._task.done():
            self._task.result()  # raises why it could not start

    async def drain(self) -> None:
        """Take no new job; let running calls finish (up to ``drain_timeout_s``); stop."""
        self.draining = True
        try:
            await self.server.drain(self.settings.drain_timeout_s)
        except TimeoutError:
            log.warning(
                "%d LiveKit calls still running after %d s; ending them",
                len(self._jobs),
                self.settings.drain_timeout_s,
            )
        finally:
            await cancel_and_wait(*self._jobs)
            await self.server.aclose()
            if self._task is not None:
                await cancel_and_wait(self._task)

    # ------------------------------------------------------------------ load
    def load(self) -> float:
        """Active room calls against capacity, 0..1 (called from an executor thread)."""
        return min(1.0, self.calls.active / max(1, self.settings.max_calls))

    # ------------------------------------------------------------------ jobs
    async def _on_request(self, request: JobRequest) -> None:
        if self.draining or self.calls.active >= self.settings.max_calls:
            # Not terminate: LiveKit offers the job to another worker.
            await request.reject(terminate=False)
            return
        await request.accept(name="VoiceAI agent", identity=f"voiceai-agent-{request.id}")

    async def _job_entry(self, ctx: JobContext) -> None:
        """Runs on the job's thread: hand the job to the gateway's loop, wait, end the job."""
        assert self._loop is not None
        ticket = JobTicket(ctx.job.id, ctx.job.room.name, ctx.token_claims())
        handed = asyncio.run_coroutine_threadsafe(self._job(ticket), self._loop)
        try:
            reason = await asyncio.wrap_future(handed)
        except asyncio.CancelledError:
            handed.cancel()  # LiveKit ended the job, or the worker is closing: end the call
            raise
        ctx.shutdown(reason)

    async def _job(self, ticket: JobTicket) -> str:
        task = asyncio.current_task()
        assert task is not None
        self._jobs.add(task)
        try:
            return await self._run_job(ticket)
        except Exception:
            log.exception("room call in %s failed", ticket.room)
            return "error"
        finally:
            self._jobs.discard(task)
