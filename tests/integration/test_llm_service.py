"""llm_svc over real loopback gRPC: the offline responder, the stream's shape, bad input beside a
good stream, and client cancellation reaching the engine."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
import grpc.aio
import pytest

from common.gen.voiceai.llm.v1 import llm_pb2, llm_pb2_grpc
from llm_svc.app import Settings, build_host
from llm_svc.providers.base import ChatEvent, ChatRequest, Completion, TokenDelta
from tests.conftest import llm_md as md
from tests.conftest import running

U, A, S = llm_pb2.ROLE_USER, llm_pb2.ROLE_ASSISTANT, llm_pb2.ROLE_SYSTEM
RULES = llm_pb2.ResponderRules(
    intents=[
        llm_pb2.Intent(keywords=["hours", "open"], reply="We open at nine."),
        llm_pb2.Intent(keywords=["book"], reply="Booking for you: {user}"),
    ],
    default_reply="Default: {user}",
)
METHOD = "/voiceai.llm.v1.LanguageModelService/StreamChat"


def _req(*msgs: tuple[Any, str], **kw: object) -> llm_pb2.StreamChatRequest:
    return llm_pb2.StreamChatRequest(
        messages=[llm_pb2.ChatMessage(role=r, content=c) for r, c in msgs],
        **kw,  # type: ignore[arg-type]
    )


async def _chat(
    stub: llm_pb2_grpc.LanguageModelServiceStub, req: llm_pb2.StreamChatRequest, call_id: str = "call-test"
) -> tuple[str, llm_pb2.ChatCompletion]:
    """The reply text and the one `done`; fails if anything follows `done` or it is missing."""
    text, done = "", None
    async for resp in stub.StreamChat(req, metadata=md(call_id)):
        assert done is None, "nothing may follow done"
        if resp.WhichOneof("event") == "delta":
            text += resp.delta.text
        else:
            done = resp.done
    assert done is not None, "the stream must end with done"
    return text, done


async def test_offline_responder_answers_by_rules() -> None:
    async with running(build_host(Settings())) as addr, grpc.aio.insecure_channel(addr) as ch:
        stub = llm_pb2_grpc.LanguageModelServiceStub(ch)
        text, done = await _chat(
            stub, _req((S, "sys"), (U, "What are your opening HOURS?"), responder_rules=RULES)
        )
        assert text == "We open at nine."
        assert done.finish_reason == llm_pb2.FINISH_REASON_STOP and done.engine == "offline-responder"
        assert done.usage.llm_completion_tokens == 4 and done.usage.llm_prompt_tokens == 6
        text, _ = await _chat(stub, _req((U, "I want to book a cleaning"), responder_rules=RULES))
        assert text == "Booking for you: I want to book a cleaning"
        text, _ = await _chat(stub, _req((U, "bookkeeping question"), responder_rules=RULES))  # word boundary
        assert text == "Default: bookkeeping question"
        text, _ = await _chat(stub, _req((U, "hello")))
        assert text == "I'm the offline demo agent. I heard you say: hello"
        text, done = await _chat(stub, _req((U, "hello"), max_tokens=2))
        assert text == "I'm the " and done.finish_reason == llm_pb2.FINISH_REASON_LENGTH
        text, _ = await _chat(stub, _req((S, "sys")))  # nobody has spoken yet
        assert text == "Hello! How can I help you today?"


async def test_settings_configure_the_responder_and_the_default_max_tokens() -> None:
    settings = Settings(llm_default_reply="Echo: {user}", llm_greeting="Welcome.", llm_max_tokens=3)
    async with running(build_host(settings)) as addr, grpc.aio.insecure_channel(addr) as ch:
        stub = llm_pb2_grpc.LanguageModelServiceStub(ch)
        assert await _chat(stub, _req((U, "one two"))) == (
            "Echo: one two",
            llm_pb2.ChatCompletion(
                finish_reason=llm_pb2.FINISH_REASON_STOP,
                engine="offline-responder",
                usage={
                    "llm_prompt_tokens": 2,
                    "llm_completion_tokens": 3,
                    # The local engine's lines (priced at zero by the price book, issue 17).
                    "lines": [
                        {"component": "llm", "provider": "offline-responder", "unit": u, "quantity_milli": q}
                        for u, q in (("input_token", 2000), ("output_token", 3000))
                    ],
                },
            ),
        )
        text, done = await _chat(stub, _req((U, "one two three")))  # max_tokens 0 = the service's 3
        assert text == "Echo: one two " and done.finish_reason == llm_pb2.FINISH_REASON_LENGTH
        assert (await _chat(stub, _req((A, "hi"))))[0] == "Welcome."


BAD = [
    (llm_pb2.StreamChatRequest(), "messages is empty"),
    (_req(*[(U, "x")] * 513), "at most 512"),
    (_req((U, "ok"), (0, "x")), "messages[1].role must be"),
    (_req((U, "é" * 16385)), "messages[0].content is over 32 KiB"),
    (_req((U, "x"), max_tokens=-1), "max_tokens must be 0..8192"),
    (_req((U, "x"), max_tokens=8193), "max_tokens must be 0..8192"),
    (_req((U, "x"), temperature=2.5), "temperature must be between 0 and 2"),
    (_req((U, "x"), temperature=float("nan")), "temperature must be between 0 and 2"),
    (
        _req((U, "x"), responder_rules=llm_pb2.ResponderRules(intents=[llm_pb2.Intent(keywords=["a"])])),
        "responder_rules.intents[0].reply is empty",
    ),
]


async def test_bad_requests_are_refused_while_a_good_stream_runs() -> None:
    async with (
        running(build_host(Settings(llm_token_delay_ms=40))) as addr,
        grpc.aio.insecure_channel(addr) as ch,
    ):
        stub = llm_pb2_grpc.LanguageModelServiceStub(ch)
        good = asyncio.ensure_future(_chat(stub, _req((U, "the good one")), "call-good"))
        await asyncio.sleep(0.1)
        for req, fragment in BAD:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await _chat(stub, req, "call-bad")
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, fragment
            assert fragment in (info.value.details() or ""), info.value.details()
        # Content that is not UTF-8 cannot even be parsed: still INVALID_ARGUMENT, saying why.
        raw = ch.unary_stream(METHOD)  # bytes in, bytes out
        inner = b"\x08\x02\x12\x02\xff\xfe"  # role USER, content 0xFF 0xFE
        with pytest.raises(grpc.aio.AioRpcError) as info:
            async for _ in raw(b"\x0a" + bytes([len(inner)]) + inner, metadata=md()):
                pass
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "UTF-8" in (info.value.details() or "")
        with pytest.raises(grpc.aio.AioRpcError) as info:
            async for _ in stub.StreamChat(_req((U, "hi"))):  # no tenant
                pass
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert not good.done()  # the good stream was open all along, and it ends well
        text, done = await good
        assert text == "I'm the offline demo agent. I heard you say: the good one"
        assert done.finish_reason == llm_pb2.FINISH_REASON_STOP


class ScriptedEngine:
    """Yields ``events`` (then one more delta every ``hang_s`` if set), recording how it ended."""

    name = "scripted"

    def __init__(self, events: list[ChatEvent], hang_s: float | None = None) -> None:
        self.events, self.hang_s = events, hang_s
        self.closed_at: float | None = None
        self.produced = 0

    async def stream(self, request: ChatRequest) -> AsyncIterator[ChatEvent]:
        try:
            for event in self.events:
                self.produced += 1
                yield event
            while self.hang_s is not None:
                await asyncio.sleep(self.hang_s)
                self.produced += 1
                yield TokenDelta("more ")
        finally:
            self.closed_at = time.monotonic()


async def test_exactly_one_done_and_a_missing_done_is_an_error() -> None:
    done = Completion("stop", 1, 1, "scripted")
    chatty = ScriptedEngine([TokenDelta("a "), done, TokenDelta("after"), done])
    async with running(build_host(Settings(), chatty)) as addr, grpc.aio.insecure_channel(addr) as ch:
        text, got = await _chat(llm_pb2_grpc.LanguageModelServiceStub(ch), _req((U, "x")))
        assert text == "a " and got.engine == "scripted"
        assert chatty.closed_at is not None and chatty.produced == 2  # closed right after done
    mute = ScriptedEngine([TokenDelta("a ")])
    async with running(build_host(Settings(), mute)) as addr, grpc.aio.insecure_channel(addr) as ch:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await _chat(llm_pb2_grpc.LanguageModelServiceStub(ch), _req((U, "x")))
        assert info.value.code() == grpc.StatusCode.INTERNAL
        assert "ended its reply without a completion" in (info.value.details() or "")


async def test_client_cancel_closes_the_engine_generator_at_once() -> None:
    # The engine sits in a 30 s delay after its first delta: closing must not wait it out.
    engine = ScriptedEngine([TokenDelta("first ")], hang_s=30.0)
    async with running(build_host(Settings(), engine)) as addr, grpc.aio.insecure_channel(addr) as ch:
        call = llm_pb2_grpc.LanguageModelServiceStub(ch).StreamChat(_req((U, "go")), metadata=md())
        first = await call.read()
        assert first.delta.text == "first "
        call.cancel()
        for _ in range(500):
            if engine.closed_at is not None:
                break
            await asyncio.sleep(0.01)
        assert engine.closed_at is not None, "the engine's generator was not closed"
        assert engine.produced == 1  # nothing more after the cancel
