from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GetHistoryKeysRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetHistoryKeysResponse(_message.Message):
    __slots__ = ("keys",)
    KEYS_FIELD_NUMBER: _ClassVar[int]
    keys: _containers.RepeatedCompositeFieldContainer[HistoryKey]
    def __init__(self, keys: _Optional[_Iterable[_Union[HistoryKey, _Mapping]]] = ...) -> None: ...

class HistoryKey(_message.Message):
    __slots__ = ("version", "key")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    version: int
    key: bytes
    def __init__(self, version: _Optional[int] = ..., key: _Optional[bytes] = ...) -> None: ...
