"""Delivery of call records: the outbox drained to tenant_svc's CallRecordInternalService.

Every snapshot is first committed to the on-disk outbox, then sent with the gateway's own
internal credential (never the caller's, so records never spend the tenant's API rate limit).
Failures are retried with jittered exponential backoff for as long as it takes; a refusal that
retrying cannot fix (INVALID_ARGUMENT, PERMISSION_DENIED...) parks the row, counted and logged
with its ids. At start-up, calls a previous process left live are recorded as interrupted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import grpc
import grpc.aio
from prometheus_client import Counter, Gauge
from pydantic_settings import BaseSettings, SettingsConfigDict

from common.discovery import ChannelPool
from common.errors import VoiceAIError
from common.gen.voiceai.tenant.v1 import call_record_internal_service_pb2 as rec
from common.gen.voiceai.tenant.v1 import call_record_internal_service_pb2_grpc as rec_grpc
from common.gen.voiceai.tenant.v1 import resources_pb2 as pb
from common.tasks import cancel_and_wait
from gateway.records.outbox import OutboxFull, RecordOutbox, Snapshot

log = logging.getLogger(__name__)

OUTBOX_WRITES = Counter(
    "voiceai_record_outbox_writes_total", "Record snapshots put in the outbox", ["result"]
)
DELIVERIES = Counter("voiceai_record_deliveries_total", "Record snapshots sent to tenant_svc", ["result"])
PENDING = Gauge("voiceai_record_outbox_pending", "Record snapshots waiting for delivery")

# Retrying cannot fix these: the row is parked (kept in the file, never dropped silently).
PERMANENT = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.OUT_OF_RANGE,
    }
)
INTERRUPTED_REASON = "gateway_stopped"


class RecordSettings(BaseSettings):
    """Where and how call records are queued and delivered (env prefix VOICEAI_RECORD_)."""

    model_config = SettingsConfigDict(env_prefix="VOICEAI_RECORD_", extra="ignore")

    # The outbox file; "" = var/records/gateway-<port>.sqlite3 ("{port}" and "{pid}" expand).
    # Give each gateway process its own, and keep it across restarts (a volume in Kubernetes).
    outbox_path: str = ""
    # Calls the outbox may hold; a new call's record beyond that is refused (counted, logged).
    outbox_max_calls: int = 100_000
    # Records sent to tenant_svc at once.
    drain_concurrency: int = 8
    retry_initial_s: float = 0.5
    retry_max_s: float = 30.0
    rpc_timeout_s: float = 5.0


def interrupted(snapshot: Snapshot) -> Snapshot:
    """The final snapshot of a call its gateway stopped in the middle of: the turns so far."""
    call = pb.Call.FromString(snapshot.payload)
    call.status = pb.CALL_STATUS_INTERRUPTED
    call.end_reason = INTERRUPTED_REASON
    if not call.HasField("end_time"):
        call.end_time.FromDatetime(datetime.fromtimestamp(snapshot.update_time or 0.0, UTC))
    return Snapshot(
        snapshot.tenant_id, snapshot.call_id, snapshot.revision + 1, True, call.SerializeToString()
    )


class RecordDelivery:
    """Owns one outbox and the task that drains it to tenant_svc."""

    def __init__(
        self,
        pool: ChannelPool,
        outbox: RecordOutbox,
        credential: Callable[[str], str] | None,
        settings: RecordSettings | None = None,
    ) -> None:
        self._pool = pool
        self.outbox = outbox
        # tenant id -> the gateway's internal `authorization` value for that tenant.
        self._credential = credential
        self._settings = settings or RecordSettings()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()

    @classmethod
    def at(
        cls, pool: ChannelPool, path: Path, credential: Callable[[str], str] | None, settings: RecordSettings
    ) -> RecordDelivery:
        """A delivery whose outbox is the file at ``path``."""
        return cls(pool, RecordOutbox(path, settings.outbox_max_calls), credential, settings)

    async def start(self) -> int:
        """Opens the outbox, records calls a previous process left live as interrupted, starts
        draining. Returns how many interrupted calls were found."""
        left = await self.outbox.open()
        for snapshot in left:
            await self.outbox.put(interrupted(snapshot))
            log.warning("call %s of tenant %s was interrupted by a gateway stop; recorded as such",
                        snapshot.call_id, snapshot.tenant_id)  # fmt: skip
        self._task = asyncio.get_running_loop().create_task(self._drain(), name="record-delivery")
        return len(left)

    async def put(self, snapshot: Snapshot) -> None:
        """Commits ``snapshot`` to disk and wakes the drain; never raises (failures are counted)."""
        try:
            stored = await self.outbox.put(snapshot)
        except OutboxFull as e:
            OUTBOX_WRITES.labels("full").inc()
            log.error("call record %s not queued: %s", snapshot.call_id, e)
            return
        except Exception:
            OUTBOX_WRITES.labels("error").inc()
            log.exception("call record %s not queued", snapshot.call_id)
            return
        OUTBOX_WRITES.labels("stored" if stored else "stale").inc()
        self._idle.clear()
        self._wake.set()

    async def _drain(self) -> None:
        limit = max(1, self._settings.drain_concurrency)
        while True:
            self._wake.clear()
            try:
                batch = await self.outbox.due(limit * 4)
            except Exception:
                log.exception("record outbox unreadable; retrying")
                batch = []
            if batch:
                gate = asyncio.Semaphore(limit)
                await asyncio.gather(*(self._deliver(s, gate) for s in batch))
                continue
            wait = await self.outbox.next_due_in()
            if wait is None and not self._wake.is_set():
                self._idle.set()
                PENDING.set(0)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=min(wait if wait is not None else 5.0, 5.0))

    async def _deliver(self, s: Snapshot, gate: asyncio.Semaphore) -> None:
        async with gate:
            try:
                await self._send(s)
            except grpc.aio.AioRpcError as e:
                await self._failed(s, e.code(), e.details() or "")
                return
            except VoiceAIError as e:  # no tenant_svc instance, ...
                await self._failed(s, e.code, e.message)
                return
            DELIVERIES.labels("ok").inc()
            await self.outbox.acknowledged(s)

    async def _send(self, s: Snapshot) -> rec.UpsertCallRecordResponse:
        md = [("x-tenant-id", s.tenant_id), ("x-call-id", s.call_id)]
        if self._credential is not None:
            md.append(("authorization", self._credential(s.tenant_id)))
        request = rec.UpsertCallRecordRequest(
            parent=f"tenants/{s.tenant_id}",
            call_id=s.call_id,
            revision=s.revision,
            call=pb.Call.FromString(s.payload),
        )
        async with self._pool.stream() as channel:
            stub = rec_grpc.CallRecordInternalServiceStub(channel)
            return await stub.UpsertCallRecord(request, metadata=md, timeout=self._settings.rpc_timeout_s)

    async def _failed(self, s: Snapshot, code: grpc.StatusCode, details: str) -> None:
        if code in PERMANENT:
            DELIVERIES.labels("parked").inc()
            log.error("call record %s of tenant %s refused (%s: %s); parked in the outbox",
                      s.call_id, s.tenant_id, code.name, details)  # fmt: skip
            await self.outbox.retry_later(s, 0.0, parked=code.name)
            return
        DELIVERIES.labels("retry").inc()
        st = self._settings
        delay = min(st.retry_max_s, st.retry_initial_s * 2 ** min(s.attempts, 16)) * random.uniform(0.5, 1.0)
        if s.attempts in (0, 5) or s.attempts % 20 == 0:
            log.warning("call record %s not delivered yet (%s: %s); retry %d in %.1f s",
                        s.call_id, code.name, details, s.attempts + 1, delay)  # fmt: skip
        await self.outbox.retry_later(s, delay)

    async def flush(self, timeout: float) -> bool:
        """Waits until nothing is pending (True) or ``timeout`` passes (False)."""
        self._wake.set()
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def close(self, timeout: float = 5.0) -> None:
        """Delivers what it can within ``timeout``; the rest stays on disk for the next start."""
        if self._task is not None:
            await self.flush(timeout)
            await cancel_and_wait(self._task)
            self._task = None
        await self.outbox.close()


__all__ = ["INTERRUPTED_REASON", "RecordDelivery", "RecordSettings", "interrupted"]
