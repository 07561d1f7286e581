"""The typed stream adapters: the only code that reads the LLM and TTS services' protobufs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from common.audio import LINEAR16, Format
from common.gen.voiceai.common.v1 import usage_pb2
from common.gen.voiceai.llm.v1 import llm_pb2
from common.gen.voiceai.tts.v1 import tts_pb2
from gateway.agents import Agent
from gateway.session.history import HistoryEntry
from gateway.session.instances import TrackedCall
from gateway.session.streams import (
    LlmStream,
    ReplyDone,
    SpeechAudio,
    SpeechFlushed,
    TokenText,
    TtsStream,
    chat_request,
    synthesis_config,
)


class _Call:
    """A grpc.aio call double: yields the given responses, records what is written."""

    def __init__(self, responses: list[Any]) -> None:
        self._responses = responses
        self.written: list[Any] = []
        self.half_closed = False

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._gen()

    async def _gen(self) -> AsyncIterator[Any]:
        for r in self._responses:
            yield r

    async def write(self, request: Any) -> None:
        self.written.append(request)

    async def done_writing(self) -> None:
        self.half_closed = True


async def test_llm_events_are_typed_and_empty_deltas_skipped() -> None:
    R = llm_pb2.StreamChatResponse
    call = _Call(
        [
            R(delta=llm_pb2.TokenDelta(text="Hi")),
            R(delta=llm_pb2.TokenDelta(text="")),
            R(delta=llm_pb2.TokenDelta(text=" there.")),
            R(
                done=llm_pb2.ChatCompletion(
                    usage=usage_pb2.Usage(llm_prompt_tokens=7, llm_completion_tokens=3)
                )
            ),
        ]
    )
    stream = LlmStream(TrackedCall(call, "llm", "127.0.0.1:1"))
    events = [e async for e in stream.events()]
    assert events == [TokenText("Hi"), TokenText(" there."), ReplyDone(7, 3)]


async def test_tts_stream_writes_text_and_reads_audio_until_flushed() -> None:
    R = tts_pb2.StreamingSynthesizeResponse
    call = _Call(
        [
            R(audio=tts_pb2.AudioChunk(text="Hello.", audio=b"\x01\x02")),
            R(audio=tts_pb2.AudioChunk(audio=b"\x03")),
            R(flush_done=tts_pb2.FlushDone()),
            R(audio=tts_pb2.AudioChunk(audio=b"never read")),
        ]
    )
    stream = TtsStream(TrackedCall(call, "tts", "127.0.0.1:2"))
    await stream.write_text("Hello.")
    await stream.end_input()
    events = [e async for e in stream.events()]
    assert [w.text for w in call.written] == ["Hello."] and call.half_closed
    assert events == [SpeechAudio("Hello.", b"\x01\x02"), SpeechAudio("", b"\x03"), SpeechFlushed()]


def test_requests_carry_the_agent_and_history() -> None:
    agent = Agent(agent_id="a", system_prompt="Be brief.", voice="v1", llm_providers=("openai",))
    history = [HistoryEntry("user", "hi", 1), HistoryEntry("assistant", "hel", 1, True)]
    req = chat_request(agent, history)
    assert [(m.role, m.content, m.interrupted) for m in req.messages] == [
        (llm_pb2.ROLE_SYSTEM, "Be brief.", False),
        (llm_pb2.ROLE_USER, "hi", False),
        (llm_pb2.ROLE_ASSISTANT, "hel", True),
    ]
    assert list(req.providers) == ["openai"]
    fmt = Format(LINEAR16, 16000)
    cfg = synthesis_config(agent, fmt)
    assert cfg.voice == "v1" and cfg.audio_format == fmt.to_proto()
