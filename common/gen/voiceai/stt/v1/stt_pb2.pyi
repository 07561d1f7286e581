from common.gen.voiceai.common.v1 import audio_pb2 as _audio_pb2
from common.gen.voiceai.common.v1 import usage_pb2 as _usage_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class StreamingRecognizeRequest(_message.Message):
    __slots__ = ("config", "audio", "finalize")
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    FINALIZE_FIELD_NUMBER: _ClassVar[int]
    config: RecognitionConfig
    audio: bytes
    finalize: Finalize
    def __init__(self, config: _Optional[_Union[RecognitionConfig, _Mapping]] = ..., audio: _Optional[bytes] = ..., finalize: _Optional[_Union[Finalize, _Mapping]] = ...) -> None: ...

class RecognitionConfig(_message.Message):
    __slots__ = ("language_code", "audio_format", "interim_results", "keyterms", "endpointing_ms", "model", "providers", "redact_pii")
    LANGUAGE_CODE_FIELD_NUMBER: _ClassVar[int]
    AUDIO_FORMAT_FIELD_NUMBER: _ClassVar[int]
    INTERIM_RESULTS_FIELD_NUMBER: _ClassVar[int]
    KEYTERMS_FIELD_NUMBER: _ClassVar[int]
    ENDPOINTING_MS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PROVIDERS_FIELD_NUMBER: _ClassVar[int]
    REDACT_PII_FIELD_NUMBER: _ClassVar[int]
    language_code: str
    audio_format: _audio_pb2.AudioFormat
    interim_results: bool
    keyterms: _containers.RepeatedScalarFieldContainer[str]
    endpointing_ms: int
    model: str
    providers: _containers.RepeatedScalarFieldContainer[str]
    redact_pii: bool
    def __init__(self, language_code: _Optional[str] = ..., audio_format: _Optional[_Union[_audio_pb2.AudioFormat, _Mapping]] = ..., interim_results: _Optional[bool] = ..., keyterms: _Optional[_Iterable[str]] = ..., endpointing_ms: _Optional[int] = ..., model: _Optional[str] = ..., providers: _Optional[_Iterable[str]] = ..., redact_pii: _Optional[bool] = ...) -> None: ...

class Finalize(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StreamingRecognizeResponse(_message.Message):
    __slots__ = ("speech_started", "interim", "final", "utterance_end", "usage")
    SPEECH_STARTED_FIELD_NUMBER: _ClassVar[int]
    INTERIM_FIELD_NUMBER: _ClassVar[int]
    FINAL_FIELD_NUMBER: _ClassVar[int]
    UTTERANCE_END_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    speech_started: SpeechStarted
    interim: Hypothesis
    final: FinalResult
    utterance_end: UtteranceEnd
    usage: _usage_pb2.Usage
    def __init__(self, speech_started: _Optional[_Union[SpeechStarted, _Mapping]] = ..., interim: _Optional[_Union[Hypothesis, _Mapping]] = ..., final: _Optional[_Union[FinalResult, _Mapping]] = ..., utterance_end: _Optional[_Union[UtteranceEnd, _Mapping]] = ..., usage: _Optional[_Union[_usage_pb2.Usage, _Mapping]] = ...) -> None: ...

class SpeechStarted(_message.Message):
    __slots__ = ("offset_ms",)
    OFFSET_MS_FIELD_NUMBER: _ClassVar[int]
    offset_ms: int
    def __init__(self, offset_ms: _Optional[int] = ...) -> None: ...

class Hypothesis(_message.Message):
    __slots__ = ("text", "start_ms", "end_ms")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    START_MS_FIELD_NUMBER: _ClassVar[int]
    END_MS_FIELD_NUMBER: _ClassVar[int]
    text: str
    start_ms: int
    end_ms: int
    def __init__(self, text: _Optional[str] = ..., start_ms: _Optional[int] = ..., end_ms: _Optional[int] = ...) -> None: ...

class FinalResult(_message.Message):
    __slots__ = ("text", "confidence", "words", "start_ms", "end_ms", "speech_final")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    WORDS_FIELD_NUMBER: _ClassVar[int]
    START_MS_FIELD_NUMBER: _ClassVar[int]
    END_MS_FIELD_NUMBER: _ClassVar[int]
    SPEECH_FINAL_FIELD_NUMBER: _ClassVar[int]
    text: str
    confidence: float
    words: _containers.RepeatedCompositeFieldContainer[WordInfo]
    start_ms: int
    end_ms: int
    speech_final: bool
    def __init__(self, text: _Optional[str] = ..., confidence: _Optional[float] = ..., words: _Optional[_Iterable[_Union[WordInfo, _Mapping]]] = ..., start_ms: _Optional[int] = ..., end_ms: _Optional[int] = ..., speech_final: _Optional[bool] = ...) -> None: ...

class WordInfo(_message.Message):
    __slots__ = ("word", "start_ms", "end_ms", "confidence")
    WORD_FIELD_NUMBER: _ClassVar[int]
    START_MS_FIELD_NUMBER: _ClassVar[int]
    END_MS_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    word: str
    start_ms: int
    end_ms: int
    confidence: float
    def __init__(self, word: _Optional[str] = ..., start_ms: _Optional[int] = ..., end_ms: _Optional[int] = ..., confidence: _Optional[float] = ...) -> None: ...

class UtteranceEnd(_message.Message):
    __slots__ = ("last_word_end_ms",)
    LAST_WORD_END_MS_FIELD_NUMBER: _ClassVar[int]
    last_word_end_ms: int
    def __init__(self, last_word_end_ms: _Optional[int] = ...) -> None: ...
