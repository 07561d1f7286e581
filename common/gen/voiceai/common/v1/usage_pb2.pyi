from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class EngineKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ENGINE_KIND_UNSPECIFIED: _ClassVar[EngineKind]
    ENGINE_KIND_LOCAL: _ClassVar[EngineKind]
    ENGINE_KIND_CLOUD: _ClassVar[EngineKind]
ENGINE_KIND_UNSPECIFIED: EngineKind
ENGINE_KIND_LOCAL: EngineKind
ENGINE_KIND_CLOUD: EngineKind

class Usage(_message.Message):
    __slots__ = ("stt_seconds", "llm_prompt_tokens", "llm_completion_tokens", "tts_characters", "tts_seconds")
    STT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    LLM_PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    LLM_COMPLETION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TTS_CHARACTERS_FIELD_NUMBER: _ClassVar[int]
    TTS_SECONDS_FIELD_NUMBER: _ClassVar[int]
    stt_seconds: float
    llm_prompt_tokens: int
    llm_completion_tokens: int
    tts_characters: int
    tts_seconds: float
    def __init__(self, stt_seconds: _Optional[float] = ..., llm_prompt_tokens: _Optional[int] = ..., llm_completion_tokens: _Optional[int] = ..., tts_characters: _Optional[int] = ..., tts_seconds: _Optional[float] = ...) -> None: ...
