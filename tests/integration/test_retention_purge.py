"""The retention purge job against real PostgreSQL: exactly what the policy says goes, over
generated policies and clocks; batched, idempotent, audited, resumable after an interruption."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg_pool import AsyncConnectionPool

from common.crypto import KekSettings, TenantKeyring, build_key_provider
from common.gen.voiceai.tenant.v1 import resources_pb2 as pb
from tenant_svc.protection import DataProtection, Retention
from tenant_svc.repository import Repository, TenantScope
from tenant_svc.retention import RetentionPurger

Policy = tuple[int, int, bool]


@pytest.fixture(scope="module")
async def repo(pg_pool: AsyncConnectionPool) -> Repository:
    return Repository(pg_pool, DataProtection(TenantKeyring(await build_key_provider(KekSettings()))))


async def tenant_with_calls(repo: Repository, now: datetime, ages_h: list[int]) -> str:
    tid = f"t-{uuid.uuid4().hex[:12]}"
    async with repo.platform() as p:
        await p.create_tenant(tid, "retention", pb.PLAN_TIER_PRO)
    async with repo.tenant(tid) as t:
        for i, age in enumerate(ages_h):
            call = pb.Call(status=pb.CALL_STATUS_COMPLETED)
            call.end_time.FromDatetime(now - timedelta(hours=age))
            call.turns.add(caller_text=f"words {i}", agent_text="reply")
            await t.insert_call(f"c{i}", "", call)
    return tid


async def state(repo: Repository, tid: str) -> dict[str, bool]:
    """call id -> whether its transcript is still there."""
    async with repo.tenant(tid) as t:
        rows = await t.rows("SELECT id, turns_sealed IS NOT NULL AS has_text FROM calls")
    return {r["id"]: r["has_text"] for r in rows}


async def audited(repo: Repository, tid: str) -> tuple[int, int]:
    async with repo.tenant(tid) as t:
        rows = await t.rows("SELECT action, changed_fields FROM audit_log WHERE actor = 'system:retention'")
    count = {"PurgeCallRecords": 0, "PurgeTranscripts": 0}
    for r in rows:
        count[r["action"]] += int(r["changed_fields"][0].split("=")[1])
    return count["PurgeCallRecords"], count["PurgeTranscripts"]


def expected(policy: Policy, ages_h: list[int]) -> dict[str, bool]:
    call_days, transcript_days, metadata_only = policy
    out = {}
    for i, age in enumerate(ages_h):
        if call_days and age > call_days * 24:
            continue
        out[f"c{i}"] = not (metadata_only or (transcript_days and age > transcript_days * 24))
    return out


async def set_policy(repo: Repository, tid: str, policy: Policy) -> None:
    async with repo.tenant(tid) as t:
        assert repo.protection is not None
        await repo.protection.set_retention(t, Retention(*policy))


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    policy=st.tuples(st.sampled_from([0, 1, 7, 30]), st.sampled_from([0, 1, 7, 30]), st.booleans()),
    ages_h=st.lists(st.integers(min_value=0, max_value=60 * 24), max_size=7),
    now=st.datetimes(min_value=datetime(2024, 1, 1), max_value=datetime(2035, 1, 1), timezones=st.just(UTC)),
    batch=st.integers(min_value=1, max_value=4),
)
async def test_the_purge_removes_exactly_what_the_policy_says(
    repo: Repository, policy: Policy, ages_h: list[int], now: datetime, batch: int
) -> None:
    tid = await tenant_with_calls(repo, now, ages_h)
    await set_policy(repo, tid, policy)
    before = await state(repo, tid)
    deleted, erased = await RetentionPurger(repo, batch_size=batch).purge_tenant(tid, now)
    after = await state(repo, tid)
    assert after == expected(policy, ages_h)
    assert deleted == len(before) - len(after)
    assert erased == sum(1 for k, v in after.items() if before[k] and not v)
    assert await audited(repo, tid) == (deleted, erased)
    # Idempotent: a second run as of the same time changes nothing and audits nothing.
    assert await RetentionPurger(repo, batch_size=batch).purge_tenant(tid, now) == (0, 0)
    assert await audited(repo, tid) == (deleted, erased)


class Interrupted(Exception):
    pass


class CrashingPurger(RetentionPurger):
    """Dies (as a killed process would) after ``batches`` committed batches."""

    def __init__(self, repo: Repository, batches: int) -> None:
        super().__init__(repo, batch_size=2)
        self.left = batches

    async def _batch_in_tx(
        self,
        tenant_id: str,
        step: Callable[[TenantScope, datetime | None, int], Awaitable[int]],
        cutoff: datetime | None,
    ) -> int:
        if self.left == 0:
            raise Interrupted
        self.left -= 1
        return await super()._batch_in_tx(tenant_id, step, cutoff)


async def test_an_interrupted_purge_resumes_and_ends_where_an_uninterrupted_one_would(
    repo: Repository,
) -> None:
    now = datetime(2030, 6, 1, tzinfo=UTC)
    ages = [24 * d for d in (1, 3, 10, 20, 40, 50, 60, 2)]
    policy: Policy = (30, 5, False)
    tid = await tenant_with_calls(repo, now, ages)
    await set_policy(repo, tid, policy)
    with pytest.raises(Interrupted):
        await CrashingPurger(repo, batches=2).purge_tenant(tid, now)
    partial = await state(repo, tid)
    assert partial != expected(policy, ages) and len(partial) < len(ages)  # stopped midway
    await RetentionPurger(repo, batch_size=2).purge_tenant(tid, now)
    assert await state(repo, tid) == expected(policy, ages)
    assert await audited(repo, tid) == (3, 2)  # every purged row audited exactly once


async def test_run_once_purges_only_tenants_whose_policy_says_so(repo: Repository) -> None:
    now = datetime.now(UTC)
    keep = await tenant_with_calls(repo, now, [24 * 400])
    purge = await tenant_with_calls(repo, now, [24 * 400])
    await set_policy(repo, purge, (30, 0, False))
    report = await RetentionPurger(repo).run_once()
    assert report.calls_deleted >= 1
    assert await state(repo, keep) == {"c0": True} and await state(repo, purge) == {}


async def test_tenant_svc_runs_the_purge_in_the_background_until_stopped(repo: Repository) -> None:
    import asyncio

    now = datetime.now(UTC)
    tid = await tenant_with_calls(repo, now, [24 * 90, 1])
    await set_policy(repo, tid, (30, 0, False))
    purger = RetentionPurger(repo)
    purger.start(interval_s=0.05)
    try:
        for _ in range(100):
            if await state(repo, tid) == {"c1": True}:
                break
            await asyncio.sleep(0.05)
        assert await state(repo, tid) == {"c1": True}
    finally:
        await purger.stop()
    assert purger._task is None
