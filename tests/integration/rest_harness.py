"""The REST front under a real uvicorn on loopback, in front of a real tenant_svc."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import httpx
import uvicorn

from tenant_svc.rest.front import build_app
from tenant_svc.rest.settings import RestSettings


@contextlib.asynccontextmanager
async def rest_front(tenant_address: str, **overrides: object) -> AsyncIterator[str]:
    """Serve the front for ``tenant_address`` on a free port; yield its base URL."""
    settings = RestSettings(tenant_address=tenant_address, port=0, **overrides)  # type: ignore[arg-type]
    config = uvicorn.Config(
        build_app(settings), host="127.0.0.1", port=0, log_config=None, access_log=False, lifespan="on"
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(), name="rest-front")
    try:
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


def client(base_url: str, token: str | None = None) -> httpx.AsyncClient:
    """An HTTP client for the front, sending ``token`` as a Bearer credential."""
    headers = {"authorization": f"Bearer {token}"} if token else {}
    return httpx.AsyncClient(base_url=base_url, headers=headers, timeout=30)
