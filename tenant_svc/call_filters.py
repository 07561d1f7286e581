"""ListCalls filters and ordering: start-time range, agent, status, `start_time asc|desc`.

Without any of them ListCalls keeps its original newest-recorded-first paging; with them rows
are ordered by start time (ties by record order) and paged by that key.
"""

from __future__ import annotations

from datetime import UTC, datetime

from common.errors import InvalidArgument
from common.gen.voiceai.tenant.v1 import resources_pb2 as pb
from common.gen.voiceai.tenant.v1 import tenant_service_pb2 as svc
from tenant_svc import validation as v
from tenant_svc.repository import CallQuery, Repository

_ORDERS = {"": False, "start_time desc": False, "start_time": True, "start_time asc": True}
_STATUSES = frozenset(pb.CallStatus.values())


def call_query(tenant: str, request: svc.ListCallsRequest) -> CallQuery | None:
    """The request's filters, or None when it sets none (the original listing applies)."""
    has_range = request.HasField("start_time") or request.HasField("end_time")
    if not (has_range or request.agent or request.status or request.order_by):
        return None
    order = " ".join(request.order_by.lower().split())
    if order not in _ORDERS:
        raise InvalidArgument("order_by must be 'start_time desc' (the default) or 'start_time asc'")
    if request.status not in _STATUSES:
        raise InvalidArgument(f"status {request.status} is not a CallStatus value")
    agent_id = ""
    if request.agent:
        ref_tenant, agent_id = v.child_id(request.agent, "agents", "agent")
        if ref_tenant != tenant:
            raise InvalidArgument("agent must be an agent of the same tenant as parent")
    start = request.start_time.ToDatetime(UTC) if request.HasField("start_time") else None
    end = request.end_time.ToDatetime(UTC) if request.HasField("end_time") else None
    if start is not None and end is not None and end <= start:
        raise InvalidArgument("end_time must be after start_time")
    return CallQuery(start, end, agent_id, request.status, _ORDERS[order])


def _token_key(row: tuple[datetime, int, pb.Call]) -> str:
    return f"{row[0].isoformat()}|{row[1]}"


async def list_calls_filtered(
    repo: Repository, tenant: str, request: svc.ListCallsRequest, query: CallQuery, size: int
) -> svc.ListCallsResponse:
    """One page of filtered calls."""
    # The token is bound to the method and tenant; a filter change with an old token just
    # continues from that position under the new filter.
    raw = str(v.decode_page(request.page_token, tenant, "ListCalls/filtered", ""))
    after: tuple[datetime, int] | None = None
    if raw:
        try:
            when, seq = raw.rsplit("|", 1)
            after = (datetime.fromisoformat(when), int(seq))
        except ValueError as e:
            raise InvalidArgument("page_token is not from this list; start again without it") from e
    async with repo.tenant(tenant) as t:
        rows = await t.list_calls_filtered(query, after, size + 1)
    token = v.next_token(tenant, "ListCalls/filtered", rows, size, _token_key)
    return svc.ListCallsResponse(calls=[c for _, _, c in rows[:size]], next_page_token=token)


__all__ = ["call_query", "list_calls_filtered"]
