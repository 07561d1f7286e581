"""Helpers for the Consul tests: real llm_svc hosts registering through the real py-consul client
with the Consul API double, and waiting on what the double or a resolver sees."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterator

import grpc.aio
import pytest

from common.consul import ConsulRegistration, ConsulSettings, register_with_consul
from common.gen.voiceai.llm.v1 import llm_pb2, llm_pb2_grpc
from common.server import ServiceHost
from llm_svc.app import Settings as LlmSettings
from llm_svc.app import build_host
from tests.conftest import llm_md as md
from tests.doubles.consul_api import ConsulApiDouble

TOKEN = "consul-acl-secret-5f3c"  # an ACL token: must reach the agent, never a log line
LLM = "voiceai-llm"


def consul_settings(api: ConsulApiDouble, **overrides: object) -> ConsulSettings:
    values: dict[str, object] = {
        "addr": api.address,
        "token": TOKEN,
        "check_interval": "1s",
        # Long enough that only a change can end a blocking query within a test.
        "watch_wait": "10m",
        "watch_retry_max_s": 0.3,
        "first_fetch_timeout_s": 3.0,
        "request_timeout_s": 2.0,
        "register_timeout_s": 2.0,
    }
    return ConsulSettings(**(values | overrides))  # type: ignore[arg-type]


@contextlib.contextmanager
def consul_double(token: str | None = TOKEN) -> Iterator[ConsulApiDouble]:
    api = ConsulApiDouble(token=token).start()
    try:
        yield api
    finally:
        api.stop()


def llm_host(**settings: object) -> ServiceHost:
    return build_host(LlmSettings(**settings))  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def registered_llm(
    api: ConsulApiDouble,
    settings: ConsulSettings | None = None,
    *,
    passing: bool = True,
    **host_settings: object,
) -> AsyncIterator[tuple[str, ConsulRegistration, ServiceHost]]:
    """An llm_svc host registered with the double (its check run once, so passing if it serves)."""
    host = llm_host(**host_settings)
    reg = register_with_consul(host, "llm_svc", settings or consul_settings(api))
    assert reg is not None
    port = await host.start()
    try:
        if passing:
            await asyncio.to_thread(api.check_now)
        yield f"127.0.0.1:{port}", reg, host
    finally:
        await host.drain(0.5)


async def eventually(predicate: Callable[[], object], timeout: float = 10.0, what: str = "") -> None:
    """Wait until ``predicate()`` is true (a generous bound: a failing test, not a slow one)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"timed out waiting for {what or predicate}")
        await asyncio.sleep(0.01)


async def chat(channel: grpc.aio.Channel, reply: str = "Fine.", call_id: str = "call-consul") -> str:
    """One StreamChat on ``channel``: the offline responder answers ``reply``."""
    req = llm_pb2.StreamChatRequest(
        messages=[llm_pb2.ChatMessage(role=llm_pb2.ROLE_USER, content="hello")],
        responder_rules=llm_pb2.ResponderRules(default_reply=reply),
    )
    text = ""
    async for resp in llm_pb2_grpc.LanguageModelServiceStub(channel).StreamChat(req, metadata=md(call_id)):
        if resp.WhichOneof("event") == "delta":
            text += resp.delta.text
    return text
