from google.api import field_behavior_pb2 as _field_behavior_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class ResolveProviderKeyRequest(_message.Message):
    __slots__ = ("provider",)
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    provider: str
    def __init__(self, provider: _Optional[str] = ...) -> None: ...

class ResolveProviderKeyResponse(_message.Message):
    __slots__ = ("found", "api_key", "base_url")
    FOUND_FIELD_NUMBER: _ClassVar[int]
    API_KEY_FIELD_NUMBER: _ClassVar[int]
    BASE_URL_FIELD_NUMBER: _ClassVar[int]
    found: bool
    api_key: str
    base_url: str
    def __init__(self, found: _Optional[bool] = ..., api_key: _Optional[str] = ..., base_url: _Optional[str] = ...) -> None: ...
