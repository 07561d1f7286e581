"""Internal hops accept internal credentials only, and the edge refuses them (issue 14 item 2),
probed as an attacker would: with a tenant's own token or API key straight at stt/llm/tts, with
an internal token taken from one hop and replayed at another service, another call, or the edge."""

from __future__ import annotations

import time

import grpc
import grpc.aio
import jwt
import pytest

from common.auth import Principal, dev_signing_key
from common.auth.hops import audience
from common.auth.internal import InternalTokenIssuer, sign
from common.auth.settings import INTERNAL_ISSUER
from common.tls import TlsConfig
from tests.conftest import TENANT, internal_md, md, running
from tests.credentials import KEY_DIR, bearer, internal_bearer
from tests.integration.tls_harness import ADMITTED, METHODS, admission_host

DENIED = grpc.StatusCode.PERMISSION_DENIED
UNAUTH = grpc.StatusCode.UNAUTHENTICATED
STT = "/voiceai.stt.v1.SpeechToTextService/StreamingRecognize"
CONVERSE = "/voiceai.gateway.v1.CallGatewayService/Converse"
TENANT_API = "/voiceai.tenant.v1.TenantService/"


async def ask(
    address: str, method: str, metadata: tuple[tuple[str, str], ...]
) -> bytes | grpc.aio.AioRpcError:
    async with grpc.aio.insecure_channel(address) as ch:
        try:
            reply: bytes = await ch.unary_unary(method)(b"", metadata=metadata, timeout=5)
            return reply
        except grpc.aio.AioRpcError as error:
            return error


def refusal(result: bytes | grpc.aio.AioRpcError) -> tuple[grpc.StatusCode, str]:
    assert isinstance(result, grpc.aio.AioRpcError), f"admitted: {result!r}"
    return result.code(), result.details() or ""


@pytest.mark.parametrize("service", ["stt", "llm", "tts"])
async def test_a_tenant_token_straight_at_an_internal_service_is_refused_naming_why(service: str) -> None:
    method = METHODS[service]
    async with running(admission_host(service, TlsConfig.plaintext())) as address:
        assert await ask(address, method, internal_md(service, "call-1")) == ADMITTED
        code, details = refusal(await ask(address, method, md("call-1", TENANT)))
        assert code == DENIED and f"{service} is internal" in details and "user token" in details
        api_key = (
            ("x-tenant-id", TENANT),
            ("x-call-id", "call-1"),
            ("authorization", "ApiKey vai_" + "a" * 12 + "_" + "b" * 43),
        )
        code, details = refusal(await ask(address, method, api_key))
        assert code == DENIED and "API keys are accepted at the gateway and tenant service only" in details


async def test_an_internal_token_opens_only_its_own_service_and_call() -> None:
    async with running(admission_host("stt", TlsConfig.plaintext())) as address:
        for_llm = (("x-tenant-id", TENANT), ("x-call-id", "call-1"), internal_bearer("llm", "call-1", TENANT))
        code, details = refusal(await ask(address, STT, for_llm))
        assert code == DENIED and "for 'llm', not for 'stt'" in details
        other_call = (
            ("x-tenant-id", TENANT),
            ("x-call-id", "call-2"),
            internal_bearer("stt", "call-1", TENANT),
        )
        code, details = refusal(await ask(address, STT, other_call))
        assert code == DENIED and "bound to another call" in details
        other_tenant = (
            ("x-tenant-id", "tenant-b"),
            ("x-call-id", "call-1"),
            internal_bearer("stt", "call-1", TENANT),
        )
        assert refusal(await ask(address, STT, other_tenant))[0] == DENIED


async def test_a_token_with_the_internal_issuer_signed_by_the_user_key_is_not_internal() -> None:
    """Dev mode too: the internal key is not the key that signs user tokens."""
    user_key = dev_signing_key(KEY_DIR)
    now = int(time.time())
    forged = sign(
        user_key,
        {
            "iss": INTERNAL_ISSUER,
            "aud": audience("stt"),
            "call_id": "call-1",
            "sub": "mallory",
            "iat": now,
            "exp": now + 300,
            "roles": ["admin"],
            "tenant_id": TENANT,
        },
    )
    async with running(admission_host("stt", TlsConfig.plaintext())) as address:
        metadata = (("x-tenant-id", TENANT), ("x-call-id", "call-1"), ("authorization", f"Bearer {forged}"))
        code, details = refusal(await ask(address, STT, metadata))
        assert code == UNAUTH and "signature" in details


async def test_the_edge_refuses_internal_tokens() -> None:
    stolen = internal_bearer("stt", "call-1", TENANT, roles=("admin",))
    async with running(admission_host("gateway", TlsConfig.plaintext())) as address:
        assert await ask(address, CONVERSE, md("call-1", TENANT)) == ADMITTED
        for token in (stolen, internal_bearer("gateway", "call-1", TENANT, roles=("admin",))):
            code, details = refusal(await ask(address, CONVERSE, (("x-tenant-id", TENANT), token)))
            assert code == DENIED and "edge API" in details


async def test_tenant_svc_refuses_internal_tokens_on_its_public_api() -> None:
    admin = internal_bearer("tenant", "", TENANT, roles=("admin",))
    host = admission_host("tenant", TlsConfig.plaintext(), extra_methods=("CreateApiKey", "UpdateAgent"))
    async with running(host) as address:
        user_admin = (("x-tenant-id", TENANT), bearer(TENANT, ("admin",)))
        assert await ask(address, TENANT_API + "CreateApiKey", user_admin) == ADMITTED
        for method in ("CreateApiKey", "UpdateAgent"):
            code, details = refusal(await ask(address, TENANT_API + method, (("x-tenant-id", TENANT), admin)))
            assert code == DENIED and "internal tokens are never accepted here" in details, method
        from_stt = (("x-tenant-id", TENANT), internal_bearer("stt", "", TENANT))
        code, details = refusal(await ask(address, TENANT_API + "GetAgent", from_stt))
        assert code == DENIED and "for 'stt', not for 'tenant'" in details
        # The gateway's remaining use (agent config for a call), with a tenant-audience token;
        # it moves into an internal service with #13/#15.
        assert await ask(address, TENANT_API + "GetAgent", (("x-tenant-id", TENANT), admin)) == ADMITTED


def test_internal_tokens_name_one_service_and_one_call() -> None:
    issuer = InternalTokenIssuer(dev_signing_key(KEY_DIR, "internal-signing-key.pem"))
    who = Principal("u", TENANT, frozenset({"agent"}), "jwt")
    stt, llm = issuer.authorization_for(who, "stt", "c1"), issuer.authorization_for(who, "llm", "c1")
    assert stt != llm and issuer.authorization_for(who, "stt", "c2") != stt
    claims = jwt.decode(stt.split()[1], options={"verify_signature": False})
    assert claims["aud"] == "voiceai-internal:stt" and claims["call_id"] == "c1" and claims["src"] == "jwt"
    with pytest.raises(ValueError, match="service"):
        issuer.mint(who, "")


async def test_the_real_llm_service_answers_only_the_gateways_token_for_the_call() -> None:
    """The attack from issue 14: a tenant runs the LLM with its own token, no call, no quota."""
    from common.gen.voiceai.llm.v1 import llm_pb2, llm_pb2_grpc
    from llm_svc.app import Settings, build_host

    request = llm_pb2.StreamChatRequest(messages=[llm_pb2.ChatMessage(role=llm_pb2.ROLE_USER, content="hi")])
    async with running(build_host(Settings())) as address, grpc.aio.insecure_channel(address) as ch:
        stub = llm_pb2_grpc.LanguageModelServiceStub(ch)
        answer = [r async for r in stub.StreamChat(request, metadata=internal_md("llm", "call-9"))]
        assert answer and answer[-1].WhichOneof("event") == "done"
        with pytest.raises(grpc.aio.AioRpcError) as info:
            _ = [r async for r in stub.StreamChat(request, metadata=md("call-9", TENANT))]
        assert info.value.code() == DENIED and "llm is internal" in (info.value.details() or "")
