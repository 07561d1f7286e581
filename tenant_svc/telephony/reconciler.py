"""Reconciliation: at start and then periodically, LiveKit SIP is converged to the database.

A run takes the exclusive SIP lock (``Repository.sip_snapshot``), so it never interleaves with a
PhoneNumber change that is provisioning or committing. LiveKit down or refusing our credentials:
the run fails, is logged with LiveKit's reason, and is retried with backoff (1 s doubling to the
interval); the service keeps serving meanwhile.
"""

from __future__ import annotations

import asyncio
import logging

from prometheus_client import Counter

from common.errors import VoiceAIError
from common.tasks import cancel_and_wait
from tenant_svc.repository import Repository
from tenant_svc.telephony.provisioning import NumberBinding, ReconcileReport, SipProvisioner

log = logging.getLogger(__name__)

RUNS = Counter("voiceai_sip_reconcile_runs_total", "SIP reconciliation runs, by result", ["result"])


class SipReconciler:
    """Owns the background task that keeps LiveKit SIP in step with the phone numbers."""

    def __init__(self, repo: Repository, provisioner: SipProvisioner, interval_s: float) -> None:
        self._repo = repo
        self._provisioner = provisioner
        self._interval_s = interval_s
        self._task: asyncio.Task[None] | None = None
        self.last: ReconcileReport | None = None
        self.runs = 0  # successful runs, for tests and status

    async def run_once(self) -> ReconcileReport:
        async with self._repo.sip_snapshot() as rows:
            report = await self._provisioner.reconcile(NumberBinding(*row) for row in rows)
        self.last = report
        self.runs += 1
        RUNS.labels("ok" if not report.failed else "partial").inc()
        level = logging.WARNING if report.drift or report.failed else logging.INFO
        log.log(
            level,
            "SIP reconcile: %d created, %d updated, %d deleted, %d unchanged, %d failed",
            report.created, report.updated, report.deleted, report.unchanged, len(report.failed),
        )  # fmt: skip
        return report

    async def _loop(self) -> None:
        backoff = 1.0
        while True:
            try:
                await self.run_once()
            except Exception as e:  # never let the task die quietly: that would be silent drift
                RUNS.labels("failed").inc()
                reason = e.message if isinstance(e, VoiceAIError) else repr(e)
                log.error("SIP reconcile failed, retrying in %.1f s: %s", backoff, reason)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self._interval_s or 60.0)
                continue
            backoff = 1.0
            if not self._interval_s:
                return
            await asyncio.sleep(self._interval_s)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="sip-reconcile")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)
