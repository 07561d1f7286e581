"""PhoneNumber changes and LiveKit SIP, kept in step: all or nothing, as the caller sees it.

A change provisions LiveKit *inside* the database transaction, before it commits. If LiveKit
refuses (a conflict: FAILED_PRECONDITION with LiveKit's message) or cannot be reached
(UNAVAILABLE), the transaction rolls back and LiveKit is converged back to the number's previous
state, so an error means nothing changed anywhere. If the commit itself fails after LiveKit
changed, the same undo runs. What an undo cannot fix (LiveKit down at that very moment) is
logged and converged by the next reconciliation (at start and every reconcile_interval_s).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from common.errors import VoiceAIError
from tenant_svc.repository import TenantScope
from tenant_svc.telephony.provisioning import NumberBinding, SipProvisioner

log = logging.getLogger(__name__)


@dataclass
class NumberChange:
    """One PhoneNumber change on its way to LiveKit; ``to`` runs inside the transaction."""

    provisioner: SipProvisioner | None
    before: NumberBinding | None = None
    after: NumberBinding | None = None
    sent: bool = False

    async def to(self, scope: TenantScope, before: NumberBinding | None, after: NumberBinding | None) -> None:
        """Make LiveKit serve ``after`` (None: remove ``before``)."""
        if self.provisioner is None:
            return
        await scope.lock_sip_shared()
        self.before, self.after, self.sent = before, after, True
        if after is not None:
            await self.provisioner.apply(after)
        elif before is not None:
            await self.provisioner.remove(before.tenant_id, before.phone_number_id)

    async def undo(self) -> None:
        p = self.provisioner
        if p is None or not self.sent:
            return
        try:
            if self.before is not None:
                await p.apply(self.before)
            elif self.after is not None:
                await p.remove(self.after.tenant_id, self.after.phone_number_id)
        except VoiceAIError as e:
            log.error("LiveKit SIP left out of step until the next reconciliation: %s", e.message)


@asynccontextmanager
async def number_change(provisioner: SipProvisioner | None) -> AsyncIterator[NumberChange]:
    """Wrap the whole transaction: whatever fails inside or at commit undoes the LiveKit side."""
    change = NumberChange(provisioner)
    try:
        yield change
    except BaseException:
        await change.undo()
        raise
