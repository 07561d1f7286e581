"""The UsageService servicer: a tenant's ledger rollups as totals, grouped rows and exports.

Ranges are whole UTC days: a call belongs to the day its end falls in (tenant_svc.usage_ledger),
so `start_time` and `end_time` are truncated to their UTC day; `end_time` is exclusive (a time
after midnight includes that day).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeAlias

import grpc.aio

from common.errors import InvalidArgument
from common.gen.voiceai.tenant.v1 import usage_service_pb2 as us
from common.gen.voiceai.tenant.v1 import usage_service_pb2_grpc as us_grpc
from common.pricing import ANY_MODEL, Price, price_from_dict
from tenant_svc import validation as v
from tenant_svc.credentials import actor
from tenant_svc.ratelimit import TenantRateLimit, rate_limited
from tenant_svc.repository import Repository
from tenant_svc.server import _scope

Ctx: TypeAlias = grpc.aio.ServicerContext
MAX_RANGE_DAYS = 3700
MAX_EXPORT_ROWS = 100_000
MAX_CONTRACT_PRICES = 500
_GROUPS: dict[int, str] = {
    us.USAGE_GROUP_BY_AGENT: "agent",
    us.USAGE_GROUP_BY_PROVIDER: "provider",
    us.USAGE_GROUP_BY_MODEL: "model",
    us.USAGE_GROUP_BY_DAY: "day",
    us.USAGE_GROUP_BY_MONTH: "month",
    us.USAGE_GROUP_BY_COMPONENT: "component",
}
_DEFAULT_LIST = ("day", "model")
EXPORT_COLUMNS = (
    "period_start", "agent", "component", "provider", "model", "unit", "quantity_milli",
    "cost_micros", "unpriced_lines",
)  # fmt: skip


def day_range(request: Any, now: datetime | None = None) -> tuple[date, date]:
    """[start, end) in UTC days; defaults: the current UTC month up to and including today."""
    now = now or datetime.now(UTC)
    start = (
        request.start_time.ToDatetime(UTC).date()
        if request.HasField("start_time")
        else now.date().replace(day=1)
    )
    if request.HasField("end_time"):
        end_at = request.end_time.ToDatetime(UTC)
        end = end_at.date() + (timedelta(days=1) if end_at.time() != datetime.min.time() else timedelta())
    else:
        end = now.date() + timedelta(days=1)
    if end <= start:
        raise InvalidArgument("end_time must be after start_time (ranges are whole UTC days)")
    if (end - start).days > MAX_RANGE_DAYS:
        raise InvalidArgument(f"the range may span at most {MAX_RANGE_DAYS} days")
    return start, end


def group_names(values: Sequence[int], default: Sequence[str] = ()) -> list[str]:
    """UsageGroupBy values -> ledger group names (unspecified is refused)."""
    names = []
    for value in values:
        name = _GROUPS.get(value)
        if name is None:
            raise InvalidArgument(
                f"group_by value {value} is not a UsageGroupBy (agent, provider, model, day, month)"
            )
        names.append(name)
    if "day" in names and "month" in names:
        raise InvalidArgument("group_by may hold day or month, not both")
    return names or list(default)


def _row(tenant: str, r: dict[str, Any]) -> us.UsageRow:
    agent = r.get("agent_id")
    period = r.get("period_start")
    return us.UsageRow(
        agent=f"tenants/{tenant}/agents/{agent}" if agent else "",
        component=r.get("component") or "",
        provider=r.get("provider") or "",
        model=r.get("model") or "",
        unit=r.get("unit") or "",
        period_start=period.isoformat() if period else "",
        quantity_milli=r["quantity_milli"],
        cost_micros=r["cost_micros"],
        unpriced_lines=r["unpriced_lines"],
    )


class UsageServicer(us_grpc.UsageServiceServicer):
    """Reads the bound tenant's ledger; the interceptors checked the credential and its role."""

    def __init__(self, repo: Repository, rate: TenantRateLimit | None = None) -> None:
        self._repo = repo
        self._rate = rate

    async def _rows(
        self, tenant: str, request: Any, groups: Sequence[str], offset: int, limit: int
    ) -> list[us.UsageRow]:
        start, end = day_range(request)
        async with self._repo.tenant(tenant) as t:
            rows = await t.usage_rows(start, end, groups, offset, limit)
        return [_row(tenant, r) for r in rows]

    @rate_limited
    async def GetUsage(self, request: us.GetUsageRequest, _: Ctx) -> us.GetUsageResponse:
        """Totals over the range, with the breakdown asked for."""
        tid = _scope(v.tenant_of(request.parent, "parent"))
        groups = group_names(request.group_by)
        start, end = day_range(request)
        async with self._repo.tenant(tid) as t:
            totals = await t.usage_totals(start, end)
            rows = await t.usage_rows(start, end, groups, 0, 1000) if groups else []
        return us.GetUsageResponse(
            calls=totals["calls"],
            call_seconds=totals["call_milliseconds"] / 1000.0,
            cost_micros=totals["cost_micros"],
            unpriced_lines=totals["unpriced_lines"],
            rows=[_row(tid, r) for r in rows],
        )

    @rate_limited
    async def ListUsage(self, request: us.ListUsageRequest, _: Ctx) -> us.ListUsageResponse:
        """Grouped rows, paged by position (the rows are sorted by their group)."""
        tid = _scope(v.tenant_of(request.parent, "parent"))
        groups = group_names(request.group_by, _DEFAULT_LIST)
        size = v.page_size(request.page_size)
        offset = int(v.decode_page(request.page_token, tid, "ListUsage", 0))
        rows = await self._rows(tid, request, groups, offset, size + 1)
        token = v.encode_page(tid, "ListUsage", offset + size) if len(rows) > size else ""
        return us.ListUsageResponse(rows=rows[:size], next_page_token=token)

    @rate_limited
    async def ExportUsage(self, request: us.ExportUsageRequest, _: Ctx) -> us.ExportUsageResponse:
        """The grouped rows as CSV (default) or JSON lines."""
        tid = _scope(v.tenant_of(request.parent, "parent"))
        groups = group_names(request.group_by, _DEFAULT_LIST)
        rows = await self._rows(tid, request, groups, 0, MAX_EXPORT_ROWS)
        records = [{c: getattr(r, c) for c in EXPORT_COLUMNS} for r in rows]
        if request.format == us.USAGE_EXPORT_FORMAT_JSONL:
            data = "".join(json.dumps(rec, separators=(",", ":")) + "\n" for rec in records)
            return us.ExportUsageResponse(content_type="application/jsonl", data=data.encode())
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=EXPORT_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(records)
        return us.ExportUsageResponse(content_type="text/csv", data=out.getvalue().encode())

    @rate_limited
    async def GetContractPrices(self, request: us.GetContractPricesRequest, _: Ctx) -> us.ContractPrices:
        """The tenant's contract prices (empty: the operator's book alone)."""
        tid = _scope(v.tenant_of(request.parent, "parent"))
        async with self._repo.tenant(tid) as t:
            prices, changed = await t.contract_prices()
        return _contract(prices, changed)

    @rate_limited
    async def UpdateContractPrices(
        self, request: us.UpdateContractPricesRequest, _: Ctx
    ) -> us.ContractPrices:
        """Replaces the tenant's contract prices; calls recorded from now on use them."""
        tid = _scope(v.tenant_of(request.parent, "parent"))
        if len(request.prices) > MAX_CONTRACT_PRICES:
            raise InvalidArgument(f"at most {MAX_CONTRACT_PRICES} contract prices")
        prices = [_price(i, p) for i, p in enumerate(request.prices)]
        if len({p.key for p in prices}) != len(prices):
            raise InvalidArgument("prices: each (component, provider, model, unit) may appear once")
        async with self._repo.tenant(tid) as t:
            await t.replace_contract_prices(prices)
            await t.audit(actor(), "UpdateContractPrices", f"tenants/{tid}/contractPrices")
            stored, changed = await t.contract_prices()
        return _contract(stored, changed)


def _price(index: int, p: us.ContractPrice) -> Price:
    try:
        return price_from_dict(
            {
                "component": p.component,
                "provider": p.provider,
                "model": p.model or ANY_MODEL,
                "unit": p.unit,
                "usd": p.usd,
                "per": p.per or 1,
            }
        )
    except InvalidArgument as e:
        raise InvalidArgument(f"prices[{index}]: {e.message}") from e


def _contract(prices: Sequence[Price], changed: datetime | None) -> us.ContractPrices:
    out = us.ContractPrices(
        prices=[
            us.ContractPrice(
                component=p.component,
                provider=p.provider,
                model=p.model,
                unit=p.unit,
                usd=str(p.usd),
                per=p.per,
            )
            for p in prices
        ]
    )
    if changed is not None:
        out.update_time.FromDatetime(changed)
    return out


__all__ = ["UsageServicer", "day_range", "group_names"]
