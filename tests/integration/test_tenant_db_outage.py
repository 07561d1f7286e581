"""The database going away: tenant_svc answers UNAVAILABLE with a message to act on, stays up,
and serves again when PostgreSQL is reachable again. The outage is real at the socket level: the
service reaches PostgreSQL through a TCP relay that the test cuts (every connection dropped,
new ones refused) and restores."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import grpc
import grpc.aio
import pytest

from common.gen.voiceai.tenant.v1 import tenant_service_pb2 as svc
from tenant_svc.db.database import DatabaseSettings, endpoints
from tests.integration.tenant_harness import tenant_api


class Relay:
    """TCP on loopback -> PostgreSQL's unix socket, with a switch."""

    def __init__(self, socket_path: str) -> None:
        self.socket_path = socket_path
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_unix_connection(self.socket_path)
        self._writers |= {writer, up_writer}
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        assert self._server is not None
        self._server.close()
        for w in self._writers:
            w.transport.abort()
        self._writers.clear()
        await self._server.wait_closed()


def _socket_of(url: str) -> str:
    host = parse_qs(urlsplit(url).query)["host"][0]
    port = urlsplit(url).port or 5432
    return f"{host}/.s.PGSQL.{port}"


async def test_database_down_is_unavailable_and_recovers(
    database_settings: DatabaseSettings, tmp_path: Path
) -> None:
    ends = endpoints(database_settings)
    if "host=/" not in ends.app_url and "host=%2F" not in ends.app_url:
        pytest.skip("needs the embedded PostgreSQL (unix socket) to relay")
    relay = Relay(_socket_of(ends.app_url))
    await relay.start()
    app_url = f"postgresql://voiceai_app@127.0.0.1:{relay.port}/postgres"
    settings = DatabaseSettings(
        url=app_url, admin_url=ends.admin_url, pool_timeout_s=1.0, connect_timeout_s=1.0
    )
    async with tenant_api(settings, tmp_path / "auth") as api:
        tenant = await api.new_tenant()
        await api.new_agent(tenant)
        name = f"tenants/{tenant}/agents/front-desk"
        await relay.cut()
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await api.stub.GetAgent(svc.GetAgentRequest(name=name), metadata=api.md(tenant, "viewer"))
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "database" in (caught.value.details() or "")
        await relay.start()  # same port: the pool reconnects on its own
        got = None
        for _ in range(40):
            try:
                got = await api.stub.GetAgent(
                    svc.GetAgentRequest(name=name), metadata=api.md(tenant, "viewer")
                )
                break
            except grpc.aio.AioRpcError as e:
                assert e.code() == grpc.StatusCode.UNAVAILABLE
                await asyncio.sleep(0.25)
        assert got is not None and got.name == name
    await relay.cut()
