"""Scripted doubles of our own STT, LLM and TTS services, for gateway tests.

They speak the real voiceai protos over real loopback gRPC, with behaviour the test scripts:
the STT hears "speech" as energy (tone bursts) and answers with the next scripted text; the
LLM streams a scripted reply (with delays, hangs or failures on demand); the TTS returns a
tone whose length follows the text. They count open streams so tests can prove cleanup.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import grpc
import grpc.aio
import numpy as np

from common.audio import mulaw_to_pcm16
from common.gen.voiceai.common.v1 import usage_pb2
from common.gen.voiceai.llm.v1 import llm_pb2, llm_pb2_grpc
from common.gen.voiceai.stt.v1 import stt_pb2, stt_pb2_grpc
from common.gen.voiceai.tts.v1 import tts_pb2, tts_pb2_grpc


@dataclass
class StreamCounter:
    open: int = 0
    total: int = 0

    def enter(self) -> None:
        self.open += 1
        self.total += 1

    def leave(self) -> None:
        self.open -= 1


def tone(ms: int, rate: int = 16000, freq: float = 440.0, amplitude: int = 8000) -> bytes:
    t = np.arange(rate * ms // 1000) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.int16).tobytes()


class ScriptedStt(stt_pb2_grpc.SpeechToTextServiceServicer):
    """Energy-based 'recognizer': the n-th burst of sound is heard as ``script[n]``.

    Expects LINEAR16 or MULAW; only energy matters. Interims carry the script text's first
    words every ``interim_ms`` of speech; a final (speech_final) follows ``silence_ms`` of quiet.
    """

    def __init__(self, script: list[str], silence_ms: int = 300, interim_ms: int = 200) -> None:
        self.script = list(script)
        self.silence_ms = silence_ms
        self.interim_ms = interim_ms
        self.heard = 0
        self.streams = StreamCounter()
        self.fail_after_ms: int | None = None
        self.configs: list[stt_pb2.RecognitionConfig] = []

    async def StreamingRecognize(
        self, request_iterator, context
    ) -> AsyncIterator[stt_pb2.StreamingRecognizeResponse]:  # type: ignore[no-untyped-def]  # noqa: N802
        self.streams.enter()
        try:
            first = await anext(aiter(request_iterator))
            self.configs.append(first.config)
            fmt = first.config.audio_format
            bps = 2 if fmt.encoding == 1 else 1
            rate = fmt.sample_rate_hertz
            pos_ms = 0.0
            speech_ms = 0.0
            quiet_ms = 0.0
            in_speech = False
            start_ms = 0.0
            last_interim = 0.0
            async for req in request_iterator:
                if req.WhichOneof("request") != "audio":
                    continue
                data = req.audio
                pcm = data if bps == 2 else mulaw_to_pcm16(data)
                samples = np.frombuffer(pcm, dtype=np.int16).astype(np.float32)
                chunk_ms = len(data) / bps / rate * 1000
                loud = samples.size > 0 and float(np.sqrt(np.mean(samples**2))) > 1000
                pos_ms += chunk_ms
                if self.fail_after_ms is not None and pos_ms > self.fail_after_ms:
                    self.fail_after_ms = None  # once: a re-opened stream is sent the audio again
                    await context.abort(grpc.StatusCode.INTERNAL, "scripted STT failure")
                if loud:
                    quiet_ms = 0.0
                    if not in_speech:
                        in_speech = True
                        start_ms = pos_ms - chunk_ms
                        speech_ms = 0.0
                        last_interim = 0.0
                        yield stt_pb2.StreamingRecognizeResponse(
                            speech_started=stt_pb2.SpeechStarted(offset_ms=int(start_ms))
                        )
                    speech_ms += chunk_ms
                    text = self._text()
                    if text and speech_ms - last_interim >= self.interim_ms:
                        last_interim = speech_ms
                        n = max(1, int(speech_ms // self.interim_ms))
                        yield stt_pb2.StreamingRecognizeResponse(
                            interim=stt_pb2.Hypothesis(text=" ".join(text.split()[:n]))
                        )
                elif in_speech:
                    quiet_ms += chunk_ms
                    if quiet_ms >= self.silence_ms:
                        in_speech = False
                        end_ms = int(pos_ms - quiet_ms)
                        text = self._text()
                        self.heard += 1
                        yield stt_pb2.StreamingRecognizeResponse(
                            final=stt_pb2.FinalResult(
                                text=text, start_ms=int(start_ms), end_ms=end_ms, speech_final=True
                            )
                        )
                        yield stt_pb2.StreamingRecognizeResponse(
                            utterance_end=stt_pb2.UtteranceEnd(last_word_end_ms=end_ms)
                        )
        finally:
            self.streams.leave()

    def _text(self) -> str:
        return self.script[self.heard] if self.heard < len(self.script) else "something else"


@dataclass
class LlmScript:
    """How the scripted LLM answers: ``reply(last_user_text) -> text`` plus faults."""

    reply: Callable[[str], str] = lambda user: f"You said {user}."
    first_token_delay_s: float = 0.0
    token_delay_s: float = 0.0
    hang: bool = False
    fail_after_tokens: int | None = None
    requests: list[llm_pb2.StreamChatRequest] = field(default_factory=list)


class ScriptedLlm(llm_pb2_grpc.LanguageModelServiceServicer):
    def __init__(self, script: LlmScript | None = None) -> None:
        self.script = script or LlmScript()
        self.streams = StreamCounter()

    async def StreamChat(self, request, context) -> AsyncIterator[llm_pb2.StreamChatResponse]:  # type: ignore[no-untyped-def]  # noqa: N802
        self.streams.enter()
        try:
            s = self.script
            s.requests.append(request)
            last_user = next(
                (m.content for m in reversed(request.messages) if m.role == llm_pb2.ROLE_USER), ""
            )
            if s.hang:
                await asyncio.sleep(3600)
            await asyncio.sleep(s.first_token_delay_s)
            tokens = re.findall(r"\S+\s*", s.reply(last_user))
            for i, token in enumerate(tokens):
                if s.fail_after_tokens is not None and i >= s.fail_after_tokens:
                    await context.abort(grpc.StatusCode.INTERNAL, "scripted LLM failure")
                yield llm_pb2.StreamChatResponse(delta=llm_pb2.TokenDelta(text=token))
                if s.token_delay_s:
                    await asyncio.sleep(s.token_delay_s)
            yield llm_pb2.StreamChatResponse(
                done=llm_pb2.ChatCompletion(
                    finish_reason=llm_pb2.FINISH_REASON_STOP,
                    usage=usage_pb2.Usage(llm_prompt_tokens=10, llm_completion_tokens=len(tokens)),
                    engine="scripted",
                )
            )
        finally:
            self.streams.leave()


class ToneTts(tts_pb2_grpc.TextToSpeechServiceServicer):
    """Speaks each sentence as a tone of ``ms_per_char`` per character, tagged with its text."""

    def __init__(self, ms_per_char: int = 15, first_audio_delay_s: float = 0.0) -> None:
        self.ms_per_char = ms_per_char
        self.first_audio_delay_s = first_audio_delay_s
        self.streams = StreamCounter()
        self.texts: list[str] = []
        self.fail_on: str | None = None  # abort the stream when asked to speak text containing this
        self.configs: list[tts_pb2.SynthesisConfig] = []

    async def StreamingSynthesize(
        self, request_iterator, context
    ) -> AsyncIterator[tts_pb2.StreamingSynthesizeResponse]:  # type: ignore[no-untyped-def]  # noqa: N802
        self.streams.enter()
        try:
            first = await anext(aiter(request_iterator))
            self.configs.append(first.config)
            fmt = first.config.audio_format
            rate = fmt.sample_rate_hertz
            bps = 2 if fmt.encoding == 1 else 1
            buf = ""
            chars = 0
            delayed = False

            def audio_for(text: str) -> bytes:
                ms = max(40, len(text) * self.ms_per_char)
                if bps == 2:
                    return tone(ms, rate, freq=300.0, amplitude=3000)
                return b"\x55" * (rate * ms // 1000)

            async def speak(text: str) -> AsyncIterator[tts_pb2.StreamingSynthesizeResponse]:
                nonlocal delayed
                if self.fail_on is not None and self.fail_on in text:
                    await context.abort(grpc.StatusCode.UNAVAILABLE, "scripted TTS failure")
                if not delayed and self.first_audio_delay_s:
                    delayed = True
                    await asyncio.sleep(self.first_audio_delay_s)
                self.texts.append(text)
                yield tts_pb2.StreamingSynthesizeResponse(
                    audio=tts_pb2.AudioChunk(audio=audio_for(text), text=text)
                )

            async for req in request_iterator:
                kind = req.WhichOneof("request")
                if kind == "text":
                    buf += req.text
                    chars += len(req.text)
                    while (m := re.search(r"[.!?]\s", buf)) is not None:
                        sentence, buf = buf[: m.end()].strip(), buf[m.end() :]
                        async for r in speak(sentence):
                            yield r
                elif kind == "flush":
                    if buf.strip():
                        async for r in speak(buf.strip()):
                            yield r
                    buf = ""
                    yield tts_pb2.StreamingSynthesizeResponse(flush_done=tts_pb2.FlushDone(characters=chars))
            # "Half-closing the request stream flushes and ends" (tts.proto).
            if buf.strip():
                async for r in speak(buf.strip()):
                    yield r
            yield tts_pb2.StreamingSynthesizeResponse(flush_done=tts_pb2.FlushDone(characters=chars))
        finally:
            self.streams.leave()
