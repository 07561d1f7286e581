"""``python -m tenant_svc.rest`` as its own process (as `make run` and deployments start it): it
serves the API against a real tenant_svc, and the launcher's dev sign-in link works."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tenant_svc.db.database import DatabaseSettings
from tenant_svc.rest.local import LocalPortal
from tests.integration.rest_harness import client
from tests.integration.tenant_harness import TenantApi, tenant_api


@pytest.fixture(scope="module")
async def api(database_settings: DatabaseSettings) -> AsyncIterator[TenantApi]:
    from tests.credentials import KEY_DIR  # the key the child process reads from the environment

    async with tenant_api(database_settings, Path(KEY_DIR)) as running:
        yield running


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_the_front_process_serves_and_prints_a_dev_sign_in(api: TenantApi) -> None:
    t = await api.new_tenant()
    await api.new_agent(t, "hello")
    portal = LocalPortal(api.address, port=_free_port())
    try:
        banner = await asyncio.to_thread(portal.start, t)
        assert f"{portal.url}/portal/" in banner, banner
        link = next(line for line in banner.splitlines() if "dev sign-in" in line).split(": ", 1)[1]
        token = link.split("#token=", 1)[1].split("&", 1)[0]
        async with client(portal.url, token) as h:
            for _ in range(3):  # several requests: one channel, on the serving loop
                r = await h.get(f"/v1/tenants/{t}/agents/hello")
                assert r.status_code == 200, r.text
            assert (
                (await h.get("/portal/")).headers["content-security-policy"].startswith("default-src 'self'")
            )
    finally:
        await asyncio.to_thread(portal.stop)
    assert portal.popen is not None and portal.popen.returncode is not None


@pytest.mark.slow  # the whole mesh as `make run` starts it (zero-cost engines)
def test_make_run_starts_the_portal_and_it_goes_with_the_launcher() -> None:
    from tests.integration.test_cli_mesh import children_of, launcher, read_until, wait_gone

    port = _free_port()
    with launcher("--portal", env={"VOICEAI_REST_PORT": str(port)}) as (proc, _ports):
        banner = read_until(proc, "Ctrl-C stops the mesh")
        assert f"portal + REST API: http://127.0.0.1:{port}/portal/" in banner, banner
        link = next(line for line in banner.splitlines() if "dev sign-in (demo, admin)" in line).split(
            ": ", 1
        )[1]
        token = link.split("#token=", 1)[1].split("&", 1)[0]
        agents = httpx.get(
            f"http://127.0.0.1:{port}/v1/tenants/demo/agents", headers={"authorization": f"Bearer {token}"}
        )
        assert agents.status_code == 200, agents.text
        [front] = [c for c in children_of(proc.pid) if "tenant_svc.rest" in c.cmdline()]
        proc.kill()  # SIGKILL: the launcher cannot stop it; the kernel tells the front
        proc.wait()
        assert wait_gone([front], 15) == []
