"""The only code that touches SQL. Every tenant-scoped statement runs inside a transaction bound
to one tenant (``set_config('voiceai.tenant_id', id, true)``, i.e. ``SET LOCAL``), under FORCED
row-level security; a move to schema- or database-per-tenant changes this module alone.

Resources cross this boundary as their protobuf messages (the API's own domain types).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any

import psycopg
import psycopg.errors
from google.protobuf import json_format
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from common.errors import AlreadyExists, FailedPrecondition, NotFound, Unavailable
from common.gen.voiceai.tenant.v1 import resources_pb2 as pb
from common.pricing import DEFAULT_BOOK, Price, PriceBook
from common.store_metrics import sql_operation, timed
from tenant_svc import usage_ledger

if TYPE_CHECKING:
    from tenant_svc.protection import DataProtection

AGENT_COLUMNS = (
    "display_name", "system_prompt", "greeting", "voice", "language_code", "stt_providers",
    "stt_model", "llm_providers", "llm_model", "tts_providers", "tts_model", "keyterms",
    "transfer_number",
    "redact_pii",  # data protection (0002)
    "max_tokens", "context_token_budget",  # issue 17: per-agent LLM limits (migration 0003)
)  # fmt: skip
_LIST_FIELDS = {"stt_providers", "llm_providers", "tts_providers", "keyterms"}
# Advisory lock key for LiveKit SIP provisioning: changes in flight hold it shared, a
# reconciliation exclusively, so a reconciliation never sees a half-committed change.
SIP_LOCK = 0x766F_5349_5000


@dataclass(frozen=True, slots=True)
class ApiKeyRow:
    """What authentication needs to know about a key, looked up before the tenant is known."""

    key_id: str
    tenant_id: str
    roles: tuple[str, ...]
    secret_hash: str
    revoke_time: datetime | None
    expire_time: datetime | None


@dataclass(frozen=True, slots=True)
class CallQuery:
    """ListCalls filters: start-time range, agent, status, and the order."""

    start: datetime | None = None
    end: datetime | None = None
    agent_id: str = ""
    status: int = 0
    ascending: bool = False


@dataclass(frozen=True, slots=True)
class PhoneRoute:
    """Where a called number routes: its tenant, number and agent."""

    tenant_id: str
    phone_number_id: str
    agent_id: str


def _ts(value: datetime | None, target: Any) -> None:
    if value is not None:
        target.FromDatetime(value)


def _agent(row: dict[str, Any]) -> pb.Agent:
    agent = pb.Agent(name=f"tenants/{row['tenant_id']}/agents/{row['id']}", revision=row["revision"])
    for col in AGENT_COLUMNS:
        if col in _LIST_FIELDS:
            getattr(agent, col).extend(row[col])
        else:
            setattr(agent, col, row[col])
    if row["max_call_duration_s"]:
        agent.max_call_duration.FromMilliseconds(int(row["max_call_duration_s"] * 1000))
    _ts(row["create_time"], agent.create_time)
    _ts(row["update_time"], agent.update_time)
    return agent


def _agent_values(agent: pb.Agent) -> list[Any]:
    values: list[Any] = []
    for col in AGENT_COLUMNS:
        value = getattr(agent, col)
        values.append(list(value) if col in _LIST_FIELDS else value)
    values.append(
        agent.max_call_duration.ToMilliseconds() / 1000 if agent.HasField("max_call_duration") else 0
    )
    return values


def _phone(row: dict[str, Any]) -> pb.PhoneNumber:
    t = row["tenant_id"]
    phone = pb.PhoneNumber(
        name=f"tenants/{t}/phoneNumbers/{row['id']}",
        e164_number=row["e164_number"],
        agent=f"tenants/{t}/agents/{row['agent_id']}",
    )
    _ts(row["create_time"], phone.create_time)
    _ts(row["update_time"], phone.update_time)
    return phone


def _tenant(row: dict[str, Any]) -> pb.Tenant:
    tenant = pb.Tenant(
        name=f"tenants/{row['id']}", display_name=row["display_name"], plan_tier=row["plan_tier"]
    )
    _ts(row["create_time"], tenant.create_time)
    _ts(row["update_time"], tenant.update_time)
    return tenant


def _api_key(row: dict[str, Any]) -> pb.ApiKey:
    key = pb.ApiKey(
        name=f"tenants/{row['tenant_id']}/apiKeys/{row['id']}",
        display_name=row["display_name"],
        roles=row["roles"],
        key_prefix=row["id"],
    )
    _ts(row["create_time"], key.create_time)
    _ts(row["revoke_time"], key.revoke_time)
    _ts(row["expire_time"], key.expire_time)
    return key


_CALL_FIELDS = (
    "tenant_id", "id", "agent_id", "status", "direction", "from_number", "to_number", "start_time",
    "end_time", "end_reason", "turns", "usage", "turns_sealed",
)  # fmt: skip
_CALL_COLUMNS = ", ".join(_CALL_FIELDS)
_CALL_SLOTS = ", ".join(["%s"] * len(_CALL_FIELDS))
_CALL_UPDATES = ", ".join(f"{c} = EXCLUDED.{c}" for c in _CALL_FIELDS[2:])


def _call(row: dict[str, Any], *, with_turns: bool) -> pb.Call:
    t = row["tenant_id"]
    call = pb.Call(
        name=f"tenants/{t}/calls/{row['id']}",
        agent=f"tenants/{t}/agents/{row['agent_id']}" if row["agent_id"] else "",
        status=row["status"],
        direction=row["direction"],
        from_number=row["from_number"],
        to_number=row["to_number"],
        end_reason=row["end_reason"],
    )
    _ts(row["start_time"], call.start_time)
    _ts(row["end_time"], call.end_time)
    json_format.ParseDict(row["usage"], call.usage)
    if with_turns:
        for turn in row["turns"]:
            json_format.ParseDict(turn, call.turns.add())
    return call


def _audit(row: dict[str, Any]) -> pb.AuditLogEntry:
    entry = pb.AuditLogEntry(
        name=f"tenants/{row['tenant_id']}/auditLogEntries/{row['id']}",
        actor=row["actor"],
        action=row["action"],
        resource=row["resource"],
        changed_fields=row["changed_fields"],
    )
    _ts(row["create_time"], entry.create_time)
    return entry


@asynccontextmanager
async def _translated() -> AsyncIterator[None]:
    """Database errors become statuses that say what to do and never whose row clashed."""
    try:
        yield
    except psycopg.errors.UniqueViolation as e:
        raise AlreadyExists(_unique_message(e)) from e
    except psycopg.errors.ForeignKeyViolation as e:
        raise FailedPrecondition(_fk_message(e)) from e
    except (psycopg.OperationalError, PoolTimeout) as e:
        raise Unavailable("PostgreSQL (the tenant database) is unavailable; retry shortly") from e


def _unique_message(e: psycopg.errors.UniqueViolation) -> str:
    constraint = (e.diag.constraint_name or "") if e.diag else ""
    if constraint == "phone_numbers_e164":
        return "that phone number is already in use; choose another number"
    return "a resource with that id already exists; choose another id"


def _fk_message(e: psycopg.errors.ForeignKeyViolation) -> str:
    table = (e.diag.table_name or "") if e.diag else ""
    if table == "agents":  # deleting an agent that a number still points at
        return "the agent is still answering phone numbers; point them at another agent first"
    return "the referenced agent does not exist in this tenant"


class TenantScope:
    """One transaction bound to one tenant; row-level security confines every statement to it."""

    def __init__(
        self,
        conn: psycopg.AsyncConnection[Any],
        tenant_id: str,
        protection: DataProtection | None = None,
        book: PriceBook = DEFAULT_BOOK,
    ) -> None:
        self._conn = conn
        self.tenant_id = tenant_id
        self.protection = protection  # seals transcripts (tenant_svc.protection); None: plaintext
        self.book = book

    async def rows(self, query: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        """Run one statement in this tenant's transaction (for tenant_svc's own data modules)."""
        return await self._rows(query, params)

    async def _rows(self, query: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        async with self._conn.cursor(row_factory=dict_row) as cur:
            with timed("postgresql", sql_operation(query), query):  # metrics + span (issue 16)
                await cur.execute(query.encode(), params)
                return await cur.fetchall() if cur.description else []

    async def _one(self, query: str, params: Sequence[Any], what: str) -> dict[str, Any]:
        rows = await self._rows(query, params)
        if not rows:
            raise NotFound(f"{what} not found")
        return rows[0]

    # -- tenant ---------------------------------------------------------------------------
    async def get_tenant(self) -> pb.Tenant:
        return _tenant(await self._one("SELECT * FROM tenants", (), "tenant"))

    async def update_tenant(self, display_name: str, plan_tier: int) -> pb.Tenant:
        row = await self._one(
            "UPDATE tenants SET display_name = %s, plan_tier = %s, update_time = now() RETURNING *",
            (display_name, plan_tier),
            "tenant",
        )
        return _tenant(row)

    # -- agents ---------------------------------------------------------------------------
    async def get_agent(self, agent_id: str, *, for_update: bool = False) -> pb.Agent:
        lock = " FOR UPDATE" if for_update else ""
        return _agent(await self._one(f"SELECT * FROM agents WHERE id = %s{lock}", (agent_id,), "agent"))

    async def list_agents(self, after: str, limit: int) -> list[pb.Agent]:
        rows = await self._rows("SELECT * FROM agents WHERE id > %s ORDER BY id LIMIT %s", (after, limit))
        return [_agent(r) for r in rows]

    async def insert_agent(self, agent_id: str, agent: pb.Agent) -> pb.Agent:
        cols = ", ".join(AGENT_COLUMNS)
        marks = ", ".join(["%s"] * (len(AGENT_COLUMNS) + 3))
        row = await self._one(
            f"INSERT INTO agents (tenant_id, id, {cols}, max_call_duration_s) VALUES ({marks}) RETURNING *",
            (self.tenant_id, agent_id, *_agent_values(agent)),
            "agent",
        )
        return _agent(row)

    async def replace_agent(self, agent_id: str, agent: pb.Agent) -> pb.Agent:
        sets = ", ".join(f"{c} = %s" for c in AGENT_COLUMNS)
        row = await self._one(
            f"UPDATE agents SET {sets}, max_call_duration_s = %s, revision = revision + 1,"
            " update_time = now() WHERE id = %s RETURNING *",
            (*_agent_values(agent), agent_id),
            "agent",
        )
        return _agent(row)

    async def delete_agent(self, agent_id: str) -> None:
        await self._one("DELETE FROM agents WHERE id = %s RETURNING id", (agent_id,), "agent")

    # -- phone numbers --------------------------------------------------------------------
    async def get_phone_number(self, phone_id: str, *, for_update: bool = False) -> pb.PhoneNumber:
        lock = " FOR UPDATE" if for_update else ""
        row = await self._one(f"SELECT * FROM phone_numbers WHERE id = %s{lock}", (phone_id,), "phone number")
        return _phone(row)

    async def list_phone_numbers(self, after: str, limit: int) -> list[pb.PhoneNumber]:
        rows = await self._rows(
            "SELECT * FROM phone_numbers WHERE id > %s ORDER BY id LIMIT %s", (after, limit)
        )
        return [_phone(r) for r in rows]

    async def insert_phone_number(self, phone_id: str, e164: str, agent_id: str) -> pb.PhoneNumber:
        row = await self._one(
            "INSERT INTO phone_numbers (tenant_id, id, e164_number, agent_id) VALUES (%s, %s, %s, %s) RETURNING *",
            (self.tenant_id, phone_id, e164, agent_id),
            "phone number",
        )
        return _phone(row)

    async def replace_phone_number(self, phone_id: str, e164: str, agent_id: str) -> pb.PhoneNumber:
        row = await self._one(
            "UPDATE phone_numbers SET e164_number = %s, agent_id = %s, update_time = now()"
            " WHERE id = %s RETURNING *",
            (e164, agent_id, phone_id),
            "phone number",
        )
        return _phone(row)

    async def delete_phone_number(self, phone_id: str) -> None:
        await self._one("DELETE FROM phone_numbers WHERE id = %s RETURNING id", (phone_id,), "phone number")

    async def lock_sip_shared(self) -> None:
        """Held to commit by a change that also changes LiveKit SIP (see ``SIP_LOCK``)."""
        await self._rows("SELECT pg_advisory_xact_lock_shared(%s)", (SIP_LOCK,))

    async def lock_sip_tenant(self) -> None:
        """As ``lock_sip_shared``, and one change at a time to this tenant's shared SIP objects
        (its outbound trunk), so two calls never both create it."""
        await self.lock_sip_shared()
        await self._rows("SELECT pg_advisory_xact_lock(hashtext('voiceai-sip:' || %s))", (self.tenant_id,))

    # -- API keys -------------------------------------------------------------------------
    async def insert_api_key(
        self,
        key_id: str,
        display_name: str,
        roles: Sequence[str],
        secret_hash: str,
        expire_time: datetime | None,
    ) -> pb.ApiKey:
        row = await self._one(
            "INSERT INTO api_keys (tenant_id, id, display_name, roles, secret_hash, expire_time)"
            " VALUES (%s, %s, %s, %s, %s, %s) RETURNING *",
            (self.tenant_id, key_id, display_name, list(roles), secret_hash, expire_time),
            "API key",
        )
        return _api_key(row)

    async def get_api_key(self, key_id: str) -> pb.ApiKey:
        return _api_key(await self._one("SELECT * FROM api_keys WHERE id = %s", (key_id,), "API key"))

    async def list_api_keys(self, after: str, limit: int) -> list[pb.ApiKey]:
        rows = await self._rows("SELECT * FROM api_keys WHERE id > %s ORDER BY id LIMIT %s", (after, limit))
        return [_api_key(r) for r in rows]

    async def revoke_api_key(self, key_id: str) -> pb.ApiKey:
        row = await self._one(
            "UPDATE api_keys SET revoke_time = coalesce(revoke_time, now()) WHERE id = %s RETURNING *",
            (key_id,),
            "API key",
        )
        return _api_key(row)

    # -- calls ----------------------------------------------------------------------------
    async def _call_values(
        self, call_id: str, agent_id: str, call: pb.Call
    ) -> tuple[tuple[Any, ...], list[dict[str, Any]]]:
        """The ``_CALL_COLUMNS`` values of ``call``, in order, and its turns as stored: sealed
        (and redacted or dropped per the tenant's policy) when data protection is on."""
        turns = [json_format.MessageToDict(t, preserving_proto_field_name=True) for t in call.turns]
        usage = json_format.MessageToDict(call.usage, preserving_proto_field_name=True)
        sealed: bytes | None = None
        if self.protection is not None:
            turns, sealed = await self.protection.seal_turns(self, call_id, agent_id, turns)
        values = (
            self.tenant_id, call_id, agent_id, call.status, call.direction, call.from_number,
            call.to_number,
            call.start_time.ToDatetime(UTC) if call.HasField("start_time") else None,
            call.end_time.ToDatetime(UTC) if call.HasField("end_time") else None,
            call.end_reason, "[]" if sealed else json.dumps(turns), json.dumps(usage), sealed,
        )  # fmt: skip
        return values, turns

    async def _priced(self, call_id: str, agent_id: str, call: pb.Call) -> pb.Call:
        """A copy of ``call`` priced into the usage ledger (idempotent per call id; the request
        stays as the caller sent it). Call inside the transaction that writes the record."""
        priced = pb.Call()
        priced.CopyFrom(call)
        await usage_ledger.record_call_usage(self._conn, self.tenant_id, call_id, agent_id, priced, self.book)
        return priced

    async def insert_call(self, call_id: str, agent_id: str, call: pb.Call) -> pb.Call:
        call = await self._priced(call_id, agent_id, call)
        values, turns = await self._call_values(call_id, agent_id, call)
        row = await self._one(
            f"INSERT INTO calls ({_CALL_COLUMNS}) VALUES ({_CALL_SLOTS}) RETURNING *", values, "call"
        )
        return _call({**row, "turns": turns}, with_turns=True)

    async def upsert_call(
        self, call_id: str, agent_id: str, call: pb.Call, revision: int
    ) -> tuple[int, bool]:
        """Writes ``call`` unless a same or newer revision is stored: (stored revision, applied).
        The usage ledger follows the revision written, in the same transaction (a stale
        revision changes neither the record nor the ledger)."""
        held = await self._rows("SELECT record_revision FROM calls WHERE id = %s FOR UPDATE", (call_id,))
        if held and int(held[0]["record_revision"]) >= revision:
            return int(held[0]["record_revision"]), False
        call = await self._priced(call_id, agent_id, call)
        values, _ = await self._call_values(call_id, agent_id, call)
        rows = await self._rows(
            f"INSERT INTO calls ({_CALL_COLUMNS}, record_revision) VALUES ({_CALL_SLOTS}, %s)"
            f" ON CONFLICT (tenant_id, id) DO UPDATE SET {_CALL_UPDATES},"
            " record_revision = EXCLUDED.record_revision"
            " WHERE calls.record_revision < EXCLUDED.record_revision RETURNING record_revision",
            (*values, revision),
        )
        if rows:
            return revision, True
        stored = await self._one("SELECT record_revision FROM calls WHERE id = %s", (call_id,), "call")
        return int(stored["record_revision"]), False

    async def get_call(self, call_id: str) -> pb.Call:
        row = await self._one("SELECT * FROM calls WHERE id = %s", (call_id,), "call")
        if self.protection is not None:
            row["turns"] = await self.protection.open_turns(self, row)
        return _call(row, with_turns=True)

    async def list_calls(self, before_seq: int, limit: int) -> list[tuple[int, pb.Call]]:
        rows = await self._rows(
            "SELECT * FROM calls WHERE seq < %s ORDER BY seq DESC LIMIT %s", (before_seq, limit)
        )
        return [(r["seq"], _call(r, with_turns=False)) for r in rows]

    async def list_calls_filtered(
        self, query: CallQuery, after: tuple[datetime, int] | None, limit: int
    ) -> list[tuple[datetime, int, pb.Call]]:
        """Calls matching ``query``, ordered by start time (then seq), continuing after ``after``."""
        where: list[str] = ["TRUE"]
        params: list[Any] = []
        sort = "coalesce(start_time, 'epoch'::timestamptz)"
        if query.start is not None:
            where.append("start_time >= %s")
            params.append(query.start)
        if query.end is not None:
            where.append("start_time < %s")
            params.append(query.end)
        if query.agent_id:
            where.append("agent_id = %s")
            params.append(query.agent_id)
        if query.status:
            where.append("status = %s")
            params.append(query.status)
        op, order = (">", "ASC") if query.ascending else ("<", "DESC")
        if after is not None:
            where.append(f"({sort}, seq) {op} (%s, %s)")
            params.extend(after)
        rows = await self._rows(
            f"SELECT *, {sort} AS sort_time FROM calls WHERE {' AND '.join(where)}"
            f" ORDER BY {sort} {order}, seq {order} LIMIT %s",
            (*params, limit),
        )
        return [(r["sort_time"], r["seq"], _call(r, with_turns=False)) for r in rows]

    # -- usage ledger (tenant_svc.usage_ledger owns the SQL) -------------------------------
    async def usage_rows(
        self, start: date, end: date, group_by: Sequence[str], offset: int, limit: int
    ) -> list[dict[str, Any]]:
        return await usage_ledger.usage_rows(self._conn, start, end, group_by, offset, limit)

    async def usage_totals(self, start: date, end: date) -> dict[str, int]:
        return await usage_ledger.usage_totals(self._conn, start, end)

    async def contract_prices(self) -> tuple[list[Price], datetime | None]:
        return await usage_ledger.contract_prices(self._conn)

    async def replace_contract_prices(self, prices: Sequence[Price]) -> None:
        await usage_ledger.replace_contract_prices(self._conn, self.tenant_id, prices)

    # -- audit ----------------------------------------------------------------------------
    async def audit(self, actor: str, action: str, resource: str, changed: Sequence[str] = ()) -> None:
        await self._rows(
            "INSERT INTO audit_log (tenant_id, actor, action, resource, changed_fields) VALUES (%s, %s, %s, %s, %s)",
            (self.tenant_id, actor, action, resource, list(changed)),
        )

    async def list_audit(self, before_id: int, limit: int) -> list[pb.AuditLogEntry]:
        rows = await self._rows(
            "SELECT * FROM audit_log WHERE id < %s ORDER BY id DESC LIMIT %s", (before_id, limit)
        )
        return [_audit(r) for r in rows]


class PlatformScope:
    """Operations across tenants, for platform operators: create, list and delete tenants."""

    def __init__(self, conn: psycopg.AsyncConnection[Any]) -> None:
        self._conn = conn

    async def create_tenant(self, tenant_id: str, display_name: str, plan_tier: int) -> pb.Tenant:
        async with self._conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(
                b"INSERT INTO tenants (id, display_name, plan_tier) VALUES (%s, %s, %s) RETURNING *",
                (tenant_id, display_name, plan_tier),
            )
            row = await cur.fetchone()
        assert row is not None
        return _tenant(row)

    async def list_tenants(self, after: str, limit: int) -> list[pb.Tenant]:
        async with self._conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(b"SELECT * FROM tenants WHERE id > %s ORDER BY id LIMIT %s", (after, limit))
            return [_tenant(r) for r in await cur.fetchall()]

    async def lock_sip_shared(self) -> None:
        await self._conn.execute(b"SELECT pg_advisory_xact_lock_shared(%s)", (SIP_LOCK,))

    async def delete_tenant(self, tenant_id: str) -> None:
        async with self._conn.cursor() as cur:
            await cur.execute(b"DELETE FROM tenants WHERE id = %s", (tenant_id,))
            if cur.rowcount == 0:
                raise NotFound("tenant not found")


class Repository:
    """Hands out tenant-bound transactions over the app role's pool."""

    def __init__(
        self,
        pool: AsyncConnectionPool,
        protection: DataProtection | None = None,
        book: PriceBook = DEFAULT_BOOK,
    ) -> None:
        self._pool = pool
        self.protection = protection
        self.book = book  # the operator's price book; tenants' contract prices layer over it

    @asynccontextmanager
    async def tenant(self, tenant_id: str) -> AsyncIterator[TenantScope]:
        async with _translated(), self._pool.connection() as conn, conn.transaction():
            await conn.execute(b"SELECT set_config('voiceai.tenant_id', %s, true)", (tenant_id,))
            yield TenantScope(conn, tenant_id, self.protection, self.book)

    @asynccontextmanager
    async def platform(self) -> AsyncIterator[PlatformScope]:
        async with _translated(), self._pool.connection() as conn, conn.transaction():
            await conn.execute(b"SELECT set_config('voiceai.platform', 'on', true)")
            yield PlatformScope(conn)

    @asynccontextmanager
    async def sip_snapshot(self) -> AsyncIterator[list[tuple[str, str, str, str]]]:
        """Every phone number of every tenant as (tenant, id, e164, agent), read under the
        exclusive ``SIP_LOCK`` that stays held until the block ends; one connection, each
        tenant's rows read with that tenant bound (row-level security still applies)."""
        async with _translated(), self._pool.connection() as conn, conn.transaction():
            await conn.execute(b"SELECT pg_advisory_xact_lock(%s)", (SIP_LOCK,))
            await conn.execute(b"SELECT set_config('voiceai.platform', 'on', true)")
            tenants = [
                r[0] for r in await (await conn.execute(b"SELECT id FROM tenants ORDER BY id")).fetchall()
            ]
            rows: list[tuple[str, str, str, str]] = []
            for tid in tenants:
                await conn.execute(b"SELECT set_config('voiceai.tenant_id', %s, true)", (tid,))
                cur = await conn.execute(
                    b"SELECT tenant_id, id, e164_number, agent_id FROM phone_numbers ORDER BY id"
                )
                rows.extend(await cur.fetchall())
            yield rows

    async def lookup_api_key(self, key_id: str) -> ApiKeyRow | None:
        async with _translated(), self._pool.connection() as conn:
            cur = await conn.execute(b"SELECT * FROM voiceai_lookup_api_key(%s)", (key_id,))
            row = await cur.fetchone()
            await conn.commit()
        if row is None:
            return None
        return ApiKeyRow(key_id, row[0], tuple(row[1]), row[2], row[3], row[4])

    async def lookup_phone_number(self, e164: str) -> PhoneRoute | None:
        async with _translated(), self._pool.connection() as conn:
            cur = await conn.execute(b"SELECT * FROM voiceai_lookup_phone_number(%s)", (e164,))
            row = await cur.fetchone()
            await conn.commit()
        return PhoneRoute(*row) if row else None


__all__ = ["ApiKeyRow", "CallQuery", "PhoneRoute", "PlatformScope", "Repository", "TenantScope"]
