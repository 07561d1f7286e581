"""The front answers bad input and faults with the right status and a message that says what to
fix, and stays up: malformed JSON, unknown fields, wrong types, oversize bodies, paths that match
no template, methods with no annotation, another tenant's paths, missing credentials, rate limits
(Retry-After from RetryInfo) and tenant_svc being down."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from common.gen.voiceai.tenant.v1 import resources_pb2 as pb
from tenant_svc.db.database import DatabaseSettings
from tests.integration.rest_harness import client, rest_front
from tests.integration.tenant_harness import TenantApi, tenant_api


@pytest.fixture(scope="module")
async def api(
    database_settings: DatabaseSettings, tmp_path_factory: pytest.TempPathFactory, redis_url: str
) -> AsyncIterator[TenantApi]:
    async with tenant_api(database_settings, Path(tmp_path_factory.mktemp("dev-auth")), redis_url) as running:
        yield running


@pytest.fixture(scope="module")
async def url(api: TenantApi) -> AsyncIterator[str]:
    async with rest_front(api.address, max_body_bytes=4096) as base:
        yield base


async def test_bad_bodies_are_400_with_the_field_named(api: TenantApi, url: str) -> None:
    t = await api.new_tenant()
    async with client(url, api.token(t, "admin")) as h:
        cases = {
            b"{oops": "not valid JSON",
            b'{"systemPrompt": "x", "colour": "red"}': "colour",
            b'{"systemPrompt": 42}': "systemPrompt",
            b'{"systemPrompt": "x", "revision": "abc"}': "revision",
        }
        for body, words in cases.items():
            r = await h.post(
                f"/v1/tenants/{t}/agents", content=body, headers={"content-type": "application/json"}
            )
            assert r.status_code == 400, r.text
            assert r.json()["code"] == 3 and words in r.json()["message"]
        empty = await h.post(f"/v1/tenants/{t}/agents", json={})
        assert empty.status_code == 400 and "system_prompt" in empty.json()["message"]  # tenant_svc's rule


async def test_oversize_bodies_are_413_before_they_are_read(api: TenantApi, url: str) -> None:
    t = await api.new_tenant()
    async with client(url, api.token(t, "admin")) as h:
        r = await h.post(f"/v1/tenants/{t}/agents", json={"systemPrompt": "x" * 10_000})
        assert r.status_code == 413 and "4096 bytes" in r.json()["message"]

        async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it arrives
            for _ in range(10):
                yield b" " * 1000

        streamed = await h.post(f"/v1/tenants/{t}/agents", content=chunks())
        assert streamed.status_code == 413


async def test_paths_and_methods_that_match_nothing(api: TenantApi, url: str) -> None:
    async with client(url) as anonymous:  # probes need no credential
        assert (await anonymous.get("/readyz")).json() == {"status": "SERVING"}
    t = await api.new_tenant()
    async with client(url, api.token(t, "admin")) as h:
        nothing = await h.get(f"/v1/tenants/{t}/agents/a/extra")
        assert nothing.status_code == 404 and nothing.json()["code"] == 5
        assert "no API method" in nothing.json()["message"]
        wrong = await h.put(f"/v1/tenants/{t}/agents/a", json={})
        assert wrong.status_code == 405 and wrong.headers["allow"] == "DELETE, GET, PATCH"
        # Converse has no annotation: no REST path reaches it.
        converse = await h.post("/voiceai.gateway.v1.CallGatewayService/Converse", json={})
        assert converse.status_code == 404


async def test_another_tenants_paths_answer_as_grpc_does(api: TenantApi, url: str) -> None:
    a, b = await api.new_tenant(), await api.new_tenant()
    await api.new_agent(b, "secret")
    async with client(url, api.token(a, "admin")) as h:
        exists = await h.get(f"/v1/tenants/{b}/agents/secret")
        missing = await h.get(f"/v1/tenants/{b}/agents/nobody")
        forced = await h.get(f"/v1/tenants/{b}/agents/secret", headers={"x-tenant-id": a})
    # The same answer whether or not the agent exists: nothing leaks.
    assert exists.status_code == missing.status_code == 403
    assert exists.json()["message"] == missing.json()["message"]
    assert forced.status_code == 403


async def test_credentials_pass_through_unchanged(api: TenantApi, url: str) -> None:
    t = await api.new_tenant()
    async with client(url) as raw:  # headers gRPC metadata cannot carry: 400, not a crash
        for header in ({"authorization": b"Bearer \xe9t\xe9"}, {"x-tenant-id": b"t\xe9"}):
            r = await raw.get(f"/v1/tenants/{t}/agents", headers=header)
            assert r.status_code == 400 and "printable ASCII" in r.json()["message"]
    async with client(url) as anonymous:
        r = await anonymous.get(f"/v1/tenants/{t}/agents")
        assert r.status_code == 401 and r.json()["code"] == 16
    async with client(url, "not-a-token") as bad:
        assert (await bad.get(f"/v1/tenants/{t}/agents")).status_code == 401
    async with client(url, api.token(t, "viewer")) as viewer:
        denied = await viewer.post(f"/v1/tenants/{t}/agents", json={"systemPrompt": "x"})
        assert denied.status_code == 403 and "admin" in denied.json()["message"]  # the gRPC RBAC's words


async def test_rate_limits_carry_retry_after(api: TenantApi, url: str) -> None:
    t = await api.new_tenant(pb.PLAN_TIER_FREE)
    async with client(url, api.token(t, "viewer")) as h:
        for _ in range(40):
            r = await h.get(f"/v1/tenants/{t}/agents")
            if r.status_code == 429:
                break
        else:
            pytest.fail("the free tier's burst never ran out")
    assert int(r.headers["retry-after"]) >= 1
    body = r.json()
    assert body["code"] == 8 and any(d["@type"].endswith("RetryInfo") for d in body["details"])


async def test_tenant_svc_down_is_503_and_the_front_stays_up(api: TenantApi) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        nobody = f"127.0.0.1:{s.getsockname()[1]}"
    async with (
        rest_front(nobody, rpc_timeout_s=2) as base,
        client(base, api.token("x", "viewer")) as h,
    ):
        assert (await h.get("/healthz")).status_code == 200
        assert (await h.get("/readyz")).json() == {"status": "NOT_SERVING"}
        r = await h.get("/v1/tenants/x/agents")
        assert r.status_code == 503 and r.json()["code"] == 14, r.text
        assert (await h.get("/openapi.json")).status_code == 200


async def test_cors_answers_only_the_configured_origins(api: TenantApi) -> None:
    t = await api.new_tenant()
    allowed, other = "https://portal.example", "https://evil.example"
    preflight = {"access-control-request-method": "PATCH", "access-control-request-headers": "authorization"}
    async with (
        rest_front(api.address, cors_origins=allowed) as base,
        client(base, api.token(t, "viewer")) as h,
    ):
        ok = await h.options(f"/v1/tenants/{t}/agents/a", headers={"origin": allowed, **preflight})
        assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == allowed
        refused = await h.options(f"/v1/tenants/{t}/agents/a", headers={"origin": other, **preflight})
        assert "access-control-allow-origin" not in refused.headers
        simple = await h.get(f"/v1/tenants/{t}/agents", headers={"origin": allowed})
        assert simple.headers["access-control-allow-origin"] == allowed
    async with rest_front(api.address) as base, client(base, api.token(t, "viewer")) as h:  # default: none
        r = await h.get(f"/v1/tenants/{t}/agents", headers={"origin": allowed})
        assert r.status_code == 200 and "access-control-allow-origin" not in r.headers


async def test_conflicts_and_missing_resources_map_per_the_code_table(api: TenantApi, url: str) -> None:
    t = await api.new_tenant()
    async with client(url, api.token(t, "admin")) as h:
        body = {"systemPrompt": "x"}
        assert (
            await h.post(f"/v1/tenants/{t}/agents", params={"agentId": "twice"}, json=body)
        ).status_code == 200
        again = await h.post(f"/v1/tenants/{t}/agents", params={"agentId": "twice"}, json=body)
        assert again.status_code == 409 and again.json()["code"] == 6  # ALREADY_EXISTS
        gone = await h.get(f"/v1/tenants/{t}/agents/never")
        assert gone.status_code == 404 and gone.json()["code"] == 5  # NOT_FOUND
        mask = await h.patch(f"/v1/tenants/{t}/agents/twice", params={"updateMask": "colour"}, json={})
        assert mask.status_code == 400 and mask.json()["code"] == 3 and "colour" in mask.json()["message"]
