from common.gen.voiceai.common.v1 import audio_pb2 as _audio_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class StreamingSynthesizeRequest(_message.Message):
    __slots__ = ("config", "text", "flush")
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    FLUSH_FIELD_NUMBER: _ClassVar[int]
    config: SynthesisConfig
    text: str
    flush: Flush
    def __init__(self, config: _Optional[_Union[SynthesisConfig, _Mapping]] = ..., text: _Optional[str] = ..., flush: _Optional[_Union[Flush, _Mapping]] = ...) -> None: ...

class SynthesisConfig(_message.Message):
    __slots__ = ("voice", "audio_format", "language_code", "speaking_rate", "providers", "model")
    VOICE_FIELD_NUMBER: _ClassVar[int]
    AUDIO_FORMAT_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_CODE_FIELD_NUMBER: _ClassVar[int]
    SPEAKING_RATE_FIELD_NUMBER: _ClassVar[int]
    PROVIDERS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    voice: str
    audio_format: _audio_pb2.AudioFormat
    language_code: str
    speaking_rate: float
    providers: _containers.RepeatedScalarFieldContainer[str]
    model: str
    def __init__(self, voice: _Optional[str] = ..., audio_format: _Optional[_Union[_audio_pb2.AudioFormat, _Mapping]] = ..., language_code: _Optional[str] = ..., speaking_rate: _Optional[float] = ..., providers: _Optional[_Iterable[str]] = ..., model: _Optional[str] = ...) -> None: ...

class Flush(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StreamingSynthesizeResponse(_message.Message):
    __slots__ = ("audio", "flush_done")
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    FLUSH_DONE_FIELD_NUMBER: _ClassVar[int]
    audio: AudioChunk
    flush_done: FlushDone
    def __init__(self, audio: _Optional[_Union[AudioChunk, _Mapping]] = ..., flush_done: _Optional[_Union[FlushDone, _Mapping]] = ...) -> None: ...

class AudioChunk(_message.Message):
    __slots__ = ("audio", "text", "duration_ms", "provider", "model")
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    DURATION_MS_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    audio: bytes
    text: str
    duration_ms: int
    provider: str
    model: str
    def __init__(self, audio: _Optional[bytes] = ..., text: _Optional[str] = ..., duration_ms: _Optional[int] = ..., provider: _Optional[str] = ..., model: _Optional[str] = ...) -> None: ...

class FlushDone(_message.Message):
    __slots__ = ("characters",)
    CHARACTERS_FIELD_NUMBER: _ClassVar[int]
    characters: int
    def __init__(self, characters: _Optional[int] = ...) -> None: ...
