"""Every hop of a call as a typed stream object; the only modules that parse the services' protobufs.

``stt`` (caller audio in, ``SttEvent`` out), ``llm`` (conversation in, ``ReplyEvent`` out),
``tts`` (text in, ``SpeechEvent`` out). Each owns its grpc.aio call and cancels it explicitly.
"""

from gateway.session.streams.llm import (
    LlmStream,
    ReplyDone,
    ReplyEvent,
    TokenText,
    chat_request,
    open_llm_stream,
)
from gateway.session.streams.stt import Final, Interim, SpeechStarted, SttEvent, SttStream, UtteranceEnd
from gateway.session.streams.tts import (
    SpeechAudio,
    SpeechEvent,
    SpeechFlushed,
    TtsStream,
    open_tts_stream,
    synthesis_config,
)

__all__ = [
    "Final",
    "Interim",
    "LlmStream",
    "ReplyDone",
    "ReplyEvent",
    "SpeechAudio",
    "SpeechEvent",
    "SpeechFlushed",
    "SpeechStarted",
    "SttEvent",
    "SttStream",
    "TokenText",
    "TtsStream",
    "UtteranceEnd",
    "chat_request",
    "open_llm_stream",
    "open_tts_stream",
    "synthesis_config",
]
