from common.gen.voiceai.tenant.v1 import resources_pb2 as _resources_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class UpsertCallRecordRequest(_message.Message):
    __slots__ = ("parent", "call_id", "revision", "call")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    CALL_FIELD_NUMBER: _ClassVar[int]
    parent: str
    call_id: str
    revision: int
    call: _resources_pb2.Call
    def __init__(self, parent: _Optional[str] = ..., call_id: _Optional[str] = ..., revision: _Optional[int] = ..., call: _Optional[_Union[_resources_pb2.Call, _Mapping]] = ...) -> None: ...

class UpsertCallRecordResponse(_message.Message):
    __slots__ = ("stored_revision", "applied")
    STORED_REVISION_FIELD_NUMBER: _ClassVar[int]
    APPLIED_FIELD_NUMBER: _ClassVar[int]
    stored_revision: int
    applied: bool
    def __init__(self, stored_revision: _Optional[int] = ..., applied: _Optional[bool] = ...) -> None: ...
