from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

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
    __slots__ = ("stt_seconds", "llm_prompt_tokens", "llm_completion_tokens", "tts_characters", "tts_seconds", "lines", "cost_micros", "price_book_version", "unpriced")
    STT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    LLM_PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    LLM_COMPLETION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TTS_CHARACTERS_FIELD_NUMBER: _ClassVar[int]
    TTS_SECONDS_FIELD_NUMBER: _ClassVar[int]
    LINES_FIELD_NUMBER: _ClassVar[int]
    COST_MICROS_FIELD_NUMBER: _ClassVar[int]
    PRICE_BOOK_VERSION_FIELD_NUMBER: _ClassVar[int]
    UNPRICED_FIELD_NUMBER: _ClassVar[int]
    stt_seconds: float
    llm_prompt_tokens: int
    llm_completion_tokens: int
    tts_characters: int
    tts_seconds: float
    lines: _containers.RepeatedCompositeFieldContainer[UsageLine]
    cost_micros: int
    price_book_version: str
    unpriced: bool
    def __init__(self, stt_seconds: _Optional[float] = ..., llm_prompt_tokens: _Optional[int] = ..., llm_completion_tokens: _Optional[int] = ..., tts_characters: _Optional[int] = ..., tts_seconds: _Optional[float] = ..., lines: _Optional[_Iterable[_Union[UsageLine, _Mapping]]] = ..., cost_micros: _Optional[int] = ..., price_book_version: _Optional[str] = ..., unpriced: _Optional[bool] = ...) -> None: ...

class UsageLine(_message.Message):
    __slots__ = ("component", "provider", "model", "key_label", "unit", "quantity_milli", "turn", "cost_micros", "price_book_version", "unpriced")
    COMPONENT_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    KEY_LABEL_FIELD_NUMBER: _ClassVar[int]
    UNIT_FIELD_NUMBER: _ClassVar[int]
    QUANTITY_MILLI_FIELD_NUMBER: _ClassVar[int]
    TURN_FIELD_NUMBER: _ClassVar[int]
    COST_MICROS_FIELD_NUMBER: _ClassVar[int]
    PRICE_BOOK_VERSION_FIELD_NUMBER: _ClassVar[int]
    UNPRICED_FIELD_NUMBER: _ClassVar[int]
    component: str
    provider: str
    model: str
    key_label: str
    unit: str
    quantity_milli: int
    turn: int
    cost_micros: int
    price_book_version: str
    unpriced: bool
    def __init__(self, component: _Optional[str] = ..., provider: _Optional[str] = ..., model: _Optional[str] = ..., key_label: _Optional[str] = ..., unit: _Optional[str] = ..., quantity_milli: _Optional[int] = ..., turn: _Optional[int] = ..., cost_micros: _Optional[int] = ..., price_book_version: _Optional[str] = ..., unpriced: _Optional[bool] = ...) -> None: ...
