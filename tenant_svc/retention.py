"""The retention purge job: applies each tenant's policy to its call records.

Per tenant (row-level security bound to it, like every request), in batches of ``batch_size``:
records older than ``call_record_days`` are deleted; transcripts older than ``transcript_days``
(all of them under ``metadata_only``) are erased and the metadata kept. Each batch is one
transaction carrying its own audit entry, so a run stopped anywhere leaves nothing half-done
and the next run continues where it stopped; running it twice changes nothing more
(idempotent). A call's age runs from its end (its start when it never ended).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from pydantic_settings import BaseSettings, SettingsConfigDict

from common.tasks import cancel_and_wait
from tenant_svc.protection import Retention, load_retention
from tenant_svc.repository import Repository, TenantScope

log = logging.getLogger(__name__)
ACTOR = "system:retention"
_AGE = "coalesce(end_time, start_time)"


class RetentionSettings(BaseSettings):
    """How often the purge runs in tenant_svc (env prefix ``VOICEAI_RETENTION_``)."""

    model_config = SettingsConfigDict(env_prefix="VOICEAI_RETENTION_", extra="ignore")

    # Seconds between runs inside tenant_svc; 0 disables (e.g. when a CronJob runs it instead).
    purge_interval_s: float = 3600.0
    batch_size: int = 500


@dataclass
class PurgeReport:
    """What one run did, summed over tenants."""

    tenants: int = 0
    calls_deleted: int = 0
    transcripts_erased: int = 0


class RetentionPurger:
    """Runs the purge over every tenant; ``clock`` says what time it is (tests move it)."""

    def __init__(
        self,
        repo: Repository,
        *,
        batch_size: int = 500,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self._repo = repo
        self._batch = batch_size
        self._clock = clock
        self._task: asyncio.Task[None] | None = None

    async def run_once(self) -> PurgeReport:
        """One pass over every tenant (those without a policy keep everything)."""
        now = self._clock()
        report = PurgeReport()
        for tenant in await self._tenants():
            deleted, erased = await self.purge_tenant(tenant, now)
            report.tenants += 1
            report.calls_deleted += deleted
            report.transcripts_erased += erased
        if report.calls_deleted or report.transcripts_erased:
            log.info(
                "retention purge: %d calls deleted, %d transcripts erased in %d tenants",
                report.calls_deleted, report.transcripts_erased, report.tenants,
            )  # fmt: skip
        return report

    async def _tenants(self) -> list[str]:
        tenants: list[str] = []
        after = ""
        while True:
            async with self._repo.platform() as p:
                page = await p.list_tenants(after, 1000)
            tenants.extend(t.name.split("/", 1)[1] for t in page)
            if len(page) < 1000:
                return tenants
            after = tenants[-1]

    async def purge_tenant(self, tenant_id: str, now: datetime) -> tuple[int, int]:
        """Apply ``tenant_id``'s policy as of ``now``; returns (calls deleted, transcripts erased)."""
        async with self._repo.tenant(tenant_id) as t:
            policy = await load_retention(t)
        deleted = erased = 0
        if policy.call_record_days:
            cutoff = now - timedelta(days=policy.call_record_days)
            while n := await self._batch_in_tx(tenant_id, _delete_batch, cutoff):
                deleted += n
        if policy.metadata_only or policy.transcript_days:
            older = None if policy.metadata_only else now - timedelta(days=policy.transcript_days)
            while n := await self._batch_in_tx(tenant_id, _erase_batch, older):
                erased += n
        return deleted, erased

    async def _batch_in_tx(
        self,
        tenant_id: str,
        step: Callable[[TenantScope, datetime | None, int], Awaitable[int]],
        cutoff: datetime | None,
    ) -> int:
        async with self._repo.tenant(tenant_id) as t:
            return await step(t, cutoff, self._batch)

    def start(self, interval_s: float) -> None:
        """Run every ``interval_s`` seconds in the background until ``stop``."""
        if interval_s > 0 and self._task is None:
            self._task = asyncio.create_task(self._loop(interval_s), name="retention-purge")

    async def _loop(self, interval_s: float) -> None:
        while True:
            try:
                await self.run_once()
            except Exception:  # a failed run is retried at the next interval; batches done stay done
                log.warning("retention purge failed; it resumes at the next run", exc_info=True)
            await asyncio.sleep(interval_s)

    async def stop(self) -> None:
        """Stop the background runs (a batch in flight rolls back and is redone next time)."""
        await cancel_and_wait(self._task)
        self._task = None


async def _delete_batch(t: TenantScope, cutoff: datetime | None, limit: int) -> int:
    rows = await t.rows(
        f"DELETE FROM calls WHERE id IN (SELECT id FROM calls WHERE {_AGE} < %s ORDER BY {_AGE}"
        " LIMIT %s FOR UPDATE SKIP LOCKED) RETURNING id",
        (cutoff, limit),
    )
    if rows:
        await t.audit(ACTOR, "PurgeCallRecords", f"tenants/{t.tenant_id}/calls", [f"deleted={len(rows)}"])
    return len(rows)


async def _erase_batch(t: TenantScope, cutoff: datetime | None, limit: int) -> int:
    older = f" AND {_AGE} < %s" if cutoff is not None else ""
    params = (cutoff, limit) if cutoff is not None else (limit,)
    rows = await t.rows(
        "UPDATE calls SET turns = '[]', turns_sealed = NULL, transcript_purged = true WHERE id IN"
        f" (SELECT id FROM calls WHERE NOT transcript_purged{older} LIMIT %s FOR UPDATE SKIP LOCKED)"
        " RETURNING id",
        params,
    )
    if rows:
        await t.audit(ACTOR, "PurgeTranscripts", f"tenants/{t.tenant_id}/calls", [f"erased={len(rows)}"])
    return len(rows)


__all__ = ["PurgeReport", "Retention", "RetentionPurger", "RetentionSettings"]


async def _main() -> None:
    from tenant_svc.db.database import DatabaseSettings, open_pool

    pool = await open_pool(DatabaseSettings())
    try:
        report = await RetentionPurger(Repository(pool), batch_size=RetentionSettings().batch_size).run_once()
        print(
            f"retention purge: {report.calls_deleted} calls deleted, {report.transcripts_erased}"
            f" transcripts erased, {report.tenants} tenants"
        )
    finally:
        await pool.close()


if __name__ == "__main__":  # `python -m tenant_svc.retention`: one run (e.g. from a CronJob)
    asyncio.run(_main())
