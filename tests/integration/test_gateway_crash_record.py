"""A gateway SIGKILLed mid-call: after its restart the call's record is there, marked interrupted
by the stop, with the turns it had. Real processes: the gateway runs as ``python -m gateway``."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import grpc.aio
import pytest
from psycopg_pool import AsyncConnectionPool

from common.gen.voiceai.tenant.v1 import resources_pb2 as pb
from common.healthcheck import wait_serving
from gateway.records import INTERRUPTED_REASON
from tenant_svc.db.database import DatabaseSettings
from tests.caller import ConverseCaller
from tests.credentials import KEY_DIR, bearer
from tests.doubles.mesh_services import ScriptedLlm, ScriptedStt, ToneTts, tone
from tests.integration.gateway_harness import inline_config, scripted_services
from tests.integration.tenant_harness import TenantApi, tenant_api
from tests.integration.test_call_records import eventually, stored


@pytest.fixture(scope="module")
async def api(database_settings: DatabaseSettings, redis_url: str) -> AsyncIterator[TenantApi]:
    async with tenant_api(database_settings, KEY_DIR, redis_url) as running:
        yield running


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def gateway_process(
    port: int, services: str, tenant: str, redis_url: str, outbox: Path
) -> Iterator[subprocess.Popen[bytes]]:
    env = {
        **os.environ,
        "VOICEAI_STT_ADDRESSES": services,
        "VOICEAI_LLM_ADDRESSES": services,
        "VOICEAI_TTS_ADDRESSES": services,
        "VOICEAI_TENANT_ADDRESSES": tenant,
        "REDIS_URL": redis_url,
        "VOICEAI_RECORD_OUTBOX_PATH": str(outbox),
        "VOICEAI_AUTH_DEV_KEY_DIR": str(KEY_DIR),
        "VOICEAI_GRACE_PERIOD_S": "1",
        "VOICEAI_WORKERS": "1",  # one process: the test kills it mid-call
    }
    env.pop("DATABASE_URL", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=None,  # its start-up errors reach the test's output
    )
    try:
        wait_serving(f"127.0.0.1:{port}", 60, alive=lambda: proc.poll() is None)
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@asynccontextmanager
async def doubles(stt: ScriptedStt) -> AsyncIterator[str]:
    host = scripted_services(stt, ScriptedLlm(), ToneTts())
    port = await host.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await host.drain(0.5)


async def test_a_killed_gateway_leaves_an_interrupted_record_with_the_turns_so_far(
    api: TenantApi, redis_url: str, pg_pool: AsyncConnectionPool, tmp_path: Path
) -> None:
    tenant = await api.new_tenant()
    outbox = tmp_path / "outbox.sqlite3"
    port = free_port()
    md = (("x-tenant-id", tenant), ("x-call-id", "killed-1"), bearer(tenant))
    async with doubles(ScriptedStt(["what are your hours?", "and on sunday?"])) as services:
        with gateway_process(port, services, api.address, redis_url, outbox) as proc:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
                caller = ConverseCaller(ch, inline_config(), metadata=md)
                async with caller:
                    await caller.wait_for(lambda c: c.of("call_started"))
                    await caller.send_pcm(tone(700))
                    await caller.wait_for(caller.turn_done(1), timeout=15)
                    await eventually(pg_pool, tenant, "killed-1", lambda c: len(c.turns) >= 1)
                    proc.send_signal(signal.SIGKILL)
                    proc.wait(10)
                    await caller.wait_for(lambda c: c.error, keep_talking=False, timeout=10)
        before = await eventually(pg_pool, tenant, "killed-1", lambda c: True)
        assert before.status == pb.CALL_STATUS_IN_PROGRESS  # nobody could say more yet
        with gateway_process(port, services, api.address, redis_url, outbox):
            after = await eventually(
                pg_pool, tenant, "killed-1", lambda c: c.status == pb.CALL_STATUS_INTERRUPTED, timeout=20
            )
    assert after.end_reason == INTERRUPTED_REASON and after.HasField("end_time")
    assert after.turns[0].caller_text == "what are your hours?"
    assert after.turns[0].agent_text  # what the agent was heard saying is kept


async def test_records_queued_while_tenant_svc_is_down_arrive_once_it_returns(
    api: TenantApi, redis_url: str, pg_pool: AsyncConnectionPool, tmp_path: Path
) -> None:
    """tenant_svc unreachable for the whole call: the record waits in the outbox (on disk) and
    arrives when a gateway with that outbox can reach it."""
    tenant = await api.new_tenant()
    outbox = tmp_path / "outbox.sqlite3"
    port = free_port()
    dead = f"127.0.0.1:{free_port()}"  # nothing listens here
    md = (("x-tenant-id", tenant), ("x-call-id", "queued-1"), bearer(tenant))
    async with doubles(ScriptedStt(["hello?"])) as services:
        with gateway_process(port, services, dead, redis_url, outbox):
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
                async with ConverseCaller(ch, inline_config(), metadata=md) as caller:
                    await caller.wait_for(lambda c: c.of("call_started"))
                    await caller.send_pcm(tone(700))
                    await caller.wait_for(caller.turn_done(1), timeout=15)
                    await caller.hangup()
            await asyncio.sleep(0.5)
            assert await stored(pg_pool, tenant, "queued-1") is None
        with gateway_process(port, services, api.address, redis_url, outbox):
            done = await eventually(
                pg_pool, tenant, "queued-1", lambda c: c.status == pb.CALL_STATUS_COMPLETED, timeout=20
            )
    assert done.turns[0].caller_text == "hello?"
