"""RED series on a real service: llm_svc over loopback gRPC, its /metrics read over HTTP after a
good stream, a refused one (bad request) and one without a tenant."""

from __future__ import annotations

import asyncio
import urllib.request
from pathlib import Path

import grpc
import grpc.aio
import pytest
from prometheus_client import REGISTRY

from common.gen.voiceai.llm.v1 import llm_pb2, llm_pb2_grpc
from common.gen.voiceai.tenant.v1 import tenant_service_pb2 as svc
from llm_svc.app import Settings, build_host
from tenant_svc.db.database import DatabaseSettings
from tests.conftest import llm_md as md
from tests.conftest import running
from tests.integration.tenant_harness import tenant_api

SERVICE, METHOD = "voiceai.llm.v1.LanguageModelService", "StreamChat"


def _scrape(port: int) -> dict[str, float]:
    """The exposition as {'name{labels}': value} (comments dropped)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            out[key] = float(value)
    return out


def _handled(series: dict[str, float], code: str) -> float:
    key = (
        f'voiceai_rpc_server_handled_total{{grpc_code="{code}",grpc_method="{METHOD}",'
        f'grpc_service="{SERVICE}",grpc_type="server_stream"}}'
    )
    return series.get(key, 0.0)


async def test_red_series_count_good_and_failed_rpcs_by_code() -> None:
    host = build_host(Settings(metrics_port=0))
    async with running(host) as addr, grpc.aio.insecure_channel(addr) as ch:
        before = await asyncio.to_thread(_scrape, host.metrics_port)
        stub = llm_pb2_grpc.LanguageModelServiceStub(ch)
        good = llm_pb2.StreamChatRequest(messages=[llm_pb2.ChatMessage(role=llm_pb2.ROLE_USER, content="hi")])
        replies = [r async for r in stub.StreamChat(good, metadata=md("call-red-1"))]
        assert replies[-1].WhichOneof("event") == "done"

        bad = llm_pb2.StreamChatRequest(
            messages=[llm_pb2.ChatMessage(role=llm_pb2.ROLE_USER, content="hi")], max_tokens=100_000
        )
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            _ = [r async for r in stub.StreamChat(bad, metadata=md("call-red-2"))]
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT

        with pytest.raises(grpc.aio.AioRpcError) as anonymous:
            _ = [r async for r in stub.StreamChat(good, metadata=(("x-call-id", "call-red-3"),))]
        assert anonymous.value.code() == grpc.StatusCode.UNAUTHENTICATED

        after = await asyncio.to_thread(_scrape, host.metrics_port)

    for code in ("OK", "INVALID_ARGUMENT", "UNAUTHENTICATED"):
        assert _handled(after, code) - _handled(before, code) == 1, code
    count = (
        f'voiceai_rpc_server_handling_seconds_count{{grpc_method="{METHOD}",'
        f'grpc_service="{SERVICE}",grpc_type="server_stream"}}'
    )
    assert after[count] - before.get(count, 0.0) == 3
    first = (
        f'voiceai_rpc_server_first_response_seconds_count{{grpc_method="{METHOD}",grpc_service="{SERVICE}"}}'
    )
    assert after[first] - before.get(first, 0.0) == 1  # only the good stream answered
    in_flight = f'voiceai_rpc_server_in_flight{{grpc_method="{METHOD}",grpc_service="{SERVICE}"}}'
    assert after[in_flight] == 0
    # Per-engine series, under the engine that answered: one reply, its tokens, its first token.
    engine = 'engine="offline-responder"'
    assert (
        after[f'voiceai_llm_replies_total{{{engine},finish="stop"}}']
        - before.get(f'voiceai_llm_replies_total{{{engine},finish="stop"}}', 0.0)
        == 1
    )
    out = f'voiceai_llm_tokens_total{{direction="out",{engine}}}'
    assert after[out] - before.get(out, 0.0) == replies[-1].done.usage.llm_completion_tokens > 0
    first_token = f"voiceai_llm_first_token_seconds_count{{{engine}}}"
    assert after[first_token] - before.get(first_token, 0.0) == 1
    # Health checks are not work: no series for them.
    # (the registry is the process's: other tests' hosts may have left series; none moved here)
    assert not [key for key in after if "grpc.health" in key and after[key] != before.get(key)]
    # Bounded labels: no tenant or call id anywhere in the exposition.
    assert not any(
        "call-red" in key
        or any(f"{label}=" in key.split("{", 1)[-1] for label in ("tenant", "tenant_id", "call_id"))
        for key in after
        if key.startswith("voiceai_rpc")
    )


async def test_tenant_svc_times_its_sql_and_reports_its_pool(
    database_settings: DatabaseSettings, tmp_path: Path, redis_url: str
) -> None:
    def sql_count(operation: str) -> float:
        labels = {"store": "postgresql", "operation": operation, "outcome": "ok"}
        return REGISTRY.get_sample_value("voiceai_store_operation_seconds_count", labels) or 0.0

    before = sql_count("SELECT"), sql_count("INSERT")
    async with tenant_api(database_settings, tmp_path, redis_url) as api:
        tenant = await api.new_tenant()
        await api.new_agent(tenant)
        await api.stub.GetTenant(
            svc.GetTenantRequest(name=f"tenants/{tenant}"), metadata=api.md(tenant, "viewer")
        )
        assert sql_count("SELECT") > before[0] and sql_count("INSERT") >= before[1] + 2
        assert (REGISTRY.get_sample_value("voiceai_db_pool_max_connections") or 0) >= 1
        assert (REGISTRY.get_sample_value("voiceai_db_pool_connections") or 0) >= 1
        assert (REGISTRY.get_sample_value("voiceai_db_pool_requests_total") or 0) >= 3
    # The closed pool is no longer reported.
    assert REGISTRY.get_sample_value("voiceai_db_pool_max_connections") == 0
