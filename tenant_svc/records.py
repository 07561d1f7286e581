"""CallRecordInternalService: the gateway's durable, idempotent call-record writes.

Internal only (the gateway's internal credential; edge credentials are PERMISSION_DENIED) and
never rate limited, so a burst of calls cannot cost their records. A write names a revision;
only a newer one replaces the stored record, so the gateway's outbox may resend at will.
"""

from __future__ import annotations

import grpc.aio

from common import context
from common.call_ids import check_call_id
from common.errors import InvalidArgument, PermissionDenied
from common.gen.voiceai.tenant.v1 import call_record_internal_service_pb2 as rec
from common.gen.voiceai.tenant.v1 import call_record_internal_service_pb2_grpc as rec_grpc
from tenant_svc import validation as v
from tenant_svc.repository import Repository

SERVICE = "voiceai.tenant.v1.CallRecordInternalService"
MAX_TURNS = 10_000


def require_internal() -> None:
    """PERMISSION_DENIED unless the request carries the mesh's internal credential."""
    principal = context.principal()
    if principal is None or principal.kind != "internal":
        raise PermissionDenied(
            "CallRecordInternalService accepts only the gateway's internal credential, not an edge credential"
        )


class CallRecordServicer(rec_grpc.CallRecordInternalServiceServicer):
    """Validates a record snapshot and upserts it by revision."""

    def __init__(self, repo: Repository) -> None:
        self._repo = repo

    async def UpsertCallRecord(
        self, request: rec.UpsertCallRecordRequest, _: grpc.aio.ServicerContext
    ) -> rec.UpsertCallRecordResponse:
        """Creates or replaces one call's record when ``revision`` is newer than the stored one."""
        require_internal()
        tid = v.tenant_of(request.parent, "parent")
        bound = context.current()
        if bound is None or bound.tenant_id != tid:
            raise PermissionDenied("the record belongs to a different tenant than 'x-tenant-id'")
        cid = check_call_id(request.call_id, "call_id")
        if request.revision <= 0:
            raise InvalidArgument("revision must be positive: 1 for a call's first snapshot, then growing")
        aid = ""
        if request.call.agent:
            ref_tenant, aid = v.child_id(request.call.agent, "agents", "call.agent")
            if ref_tenant != tid:
                raise InvalidArgument("call.agent must be an agent of the same tenant")
        if len(request.call.turns) > MAX_TURNS:
            raise InvalidArgument(f"call.turns: at most {MAX_TURNS} turns per call")
        async with self._repo.tenant(tid) as t:
            # Priced into the usage ledger in this same transaction (Repository.upsert_call).
            stored, applied = await t.upsert_call(cid, aid, request.call, request.revision)
        return rec.UpsertCallRecordResponse(stored_revision=stored, applied=applied)


__all__ = ["SERVICE", "CallRecordServicer", "require_internal"]
