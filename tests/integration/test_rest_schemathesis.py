"""schemathesis against the running front (real tenant_svc and PostgreSQL) with a dev credential:
generated requests for every operation of the served /openapi.json, no 5xx, and every response
conforms to the document (status codes, content types, schemas)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tenant_svc.db.database import DatabaseSettings
from tests.integration.rest_harness import rest_front
from tests.integration.tenant_harness import TenantApi, tenant_api

CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"


@pytest.fixture(scope="module")
async def api(
    database_settings: DatabaseSettings, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[TenantApi]:
    async with tenant_api(database_settings, Path(tmp_path_factory.mktemp("dev-auth"))) as running:
        yield running


@pytest.mark.slow
async def test_schemathesis_finds_no_server_error_and_no_schema_drift(api: TenantApi, tmp_path: Path) -> None:
    t = await api.new_tenant()
    await api.new_agent(t)
    # The tenant path parameter is pinned to the credential's tenant, so requests get past
    # authorization and reach the handlers (random tenants would all be PERMISSION_DENIED).
    config = tmp_path / "schemathesis.toml"
    config.write_text(f'[parameters]\n"path.tenant" = "{t}"\n"path.agent" = "front-desk"\n')
    async with rest_front(api.address) as url:
        proc = await asyncio.create_subprocess_exec(
            str(Path(sys.executable).parent / "schemathesis"),
            "--config-file",
            str(config),
            "run",
            f"{url}/openapi.json",
            "--checks",
            CHECKS,
            "--phases",
            "examples,coverage,fuzzing",
            "--max-examples",
            "15",
            "--workers",
            "1",
            "--seed",
            "18",
            "--no-color",
            "--header",
            f"Authorization: Bearer {api.token(t, 'admin')}",
            cwd=tmp_path,  # its example cache stays out of the work tree
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await proc.communicate()
    text = out.decode(errors="replace")
    assert proc.returncode == 0, text[-6000:]
    assert "No issues found" in text or "passed" in text, text[-3000:]
