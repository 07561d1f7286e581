"""mTLS on every service: the right identity is admitted; another service's identity, plaintext,
an expired certificate, a certificate from another CA, a client that does not trust the server's
CA and a server presenting another service's certificate are all refused, each with a log line
naming why, and the server keeps serving."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import grpc.aio
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from common.tls import TlsConfig, tenant_channel_credentials
from tests.conftest import TENANT, internal_md, md, running
from tests.credentials import internal_bearer
from tests.integration.tls_harness import ADMITTED, METHODS, Pki, admission_host, client_channel

UNAVAILABLE = grpc.StatusCode.UNAVAILABLE
DENIED = grpc.StatusCode.PERMISSION_DENIED
BEHIND_THE_EDGE = ("stt", "llm", "tts", "tenant")
# Who may call whom (besides these, every identity is refused).
ALLOWED = {"stt": {"gateway"}, "llm": {"gateway"}, "tts": {"gateway"}, "tenant": {"gateway", "rest"}}


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    pki = Pki.create(tmp_path_factory.mktemp("pki"))
    pki.write("gateway", name="gateway-expired", expired=True)
    pki.write("gateway", name="gateway-rogue", authority=pki.rogue)
    return pki


def credentials(service: str, call_id: str = "call-1") -> tuple[tuple[str, str], ...]:
    """The right credential for each service: internal tokens behind the edge, user tokens at it."""
    if service in ("stt", "llm", "tts"):
        return internal_md(service, call_id)
    return md(call_id, TENANT)


async def call(channel: grpc.aio.Channel, service: str) -> bytes:
    reply: bytes = await channel.unary_unary(METHODS[service])(b"", metadata=credentials(service), timeout=5)
    return reply


async def refused(channel: grpc.aio.Channel, service: str) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call(channel, service)
    return info.value


@pytest.fixture(params=[*BEHIND_THE_EDGE, "gateway"])
async def served(request: pytest.FixtureRequest, pki: Pki) -> AsyncIterator[tuple[str, str]]:
    service: str = request.param
    async with running(admission_host(service, pki.config(service))) as address:
        yield service, address


async def test_the_allowed_identities_are_admitted_and_others_refused_by_name(
    served: tuple[str, str], pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    service, address = served
    caplog.set_level(logging.INFO)
    for identity in ("gateway", "stt", "llm", "tts", "tenant", "rest"):
        async with client_channel(address, pki, identity, server_name=service) as ch:
            if service == "gateway" or identity in ALLOWED[service]:
                assert await call(ch, service) == ADMITTED, identity
            else:
                error = await refused(ch, service)
                assert error.code() == DENIED, identity
                assert f"peer identity '{identity}'" in (error.details() or "")
                assert f"from peer {identity}" in caplog.text


async def test_handshake_failures_are_refused_logged_and_the_server_stays_up(
    served: tuple[str, str], pki: Pki, capfd: pytest.CaptureFixture[str]
) -> None:
    service, address = served
    cases: list[tuple[str, grpc.aio.Channel]] = [
        ("plaintext", grpc.aio.insecure_channel(address)),
        # The client does not trust the CA that signed the server's certificate.
        (
            "wrong CA trusted",
            client_channel(address, pki, "gateway", trust="rogue-ca.pem", server_name=service),
        ),
        # The server's certificate names another service than the one the client dialled.
        (
            "another service's server",
            client_channel(address, pki, "gateway", server_name="llm" if service != "llm" else "tts"),
        ),
    ]
    if service in BEHIND_THE_EDGE:  # the edge does not ask for client certificates
        cases += [
            ("no client certificate", client_channel(address, pki, None, server_name=service)),
            (
                "expired client certificate",
                client_channel(address, pki, "gateway-expired", server_name=service),
            ),
            (
                "client certificate from another CA",
                client_channel(address, pki, "gateway-rogue", server_name=service),
            ),
        ]
    for label, channel in cases:
        async with channel:
            assert (await refused(channel, service)).code() == UNAVAILABLE, label
    logged = capfd.readouterr().err
    assert "Handshake failed" in logged or "handshake" in logged.lower()
    if service in BEHIND_THE_EDGE:
        assert "PEER_DID_NOT_RETURN_A_CERTIFICATE" in logged
        assert "CERTIFICATE_VERIFY_FAILED" in logged
    # Still serving, to the right peer.
    async with client_channel(address, pki, "gateway", server_name=service) as ch:
        assert await call(ch, service) == ADMITTED
        reply = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_health_and_reflection_need_only_the_ca_at_the_edge(pki: Pki) -> None:
    async with running(admission_host("gateway", pki.config("gateway"))) as address:
        async with client_channel(address, pki, None, server_name="localhost") as ch:
            reply = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_behind_the_edge_health_is_open_to_any_mesh_certificate(pki: Pki, tmp_path: Path) -> None:
    """Health and reflection are exempt from the identity check (an operator's grpcurl with a
    mesh certificate, Consul's check), never from the CA check."""
    async with running(admission_host("stt", pki.config("stt"))) as address:
        async with client_channel(address, pki, "tenant", server_name="stt") as ch:
            reply = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
            assert (await refused(ch, "stt")).code() == DENIED


async def test_only_the_gateway_brings_internal_tokens_to_tenant_svc(pki: Pki) -> None:
    """The REST front may call tenant_svc, but never with an internal token (only the gateway
    mints and sends those)."""
    internal = (("x-tenant-id", TENANT), internal_bearer("tenant", "", TENANT))
    async with running(admission_host("tenant", pki.config("tenant"))) as address:
        async with client_channel(address, pki, "gateway", server_name="tenant") as ch:
            assert await ch.unary_unary(METHODS["tenant"])(b"", metadata=internal, timeout=5) == ADMITTED
        async with client_channel(address, pki, "rest", server_name="tenant") as ch:
            assert await call(ch, "tenant") == ADMITTED  # with a user token
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await ch.unary_unary(METHODS["tenant"])(b"", metadata=internal, timeout=5)
            assert info.value.code() == DENIED and "peer identity 'rest'" in (info.value.details() or "")


async def test_the_rest_front_helper_dials_tenant_svc_as_rest(pki: Pki) -> None:
    creds, options = tenant_channel_credentials(pki.config("rest"))
    assert creds is not None
    async with running(admission_host("tenant", pki.config("tenant"))) as address:
        async with grpc.aio.secure_channel(address, creds, options=options) as ch:
            assert await call(ch, "tenant") == ADMITTED
    assert tenant_channel_credentials(TlsConfig.plaintext()) == (None, [])
