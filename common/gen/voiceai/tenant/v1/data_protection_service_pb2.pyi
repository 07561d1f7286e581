import datetime

from google.api import annotations_pb2 as _annotations_pb2
from google.api import client_pb2 as _client_pb2
from google.api import field_behavior_pb2 as _field_behavior_pb2
from google.api import resource_pb2 as _resource_pb2
from google.protobuf import empty_pb2 as _empty_pb2
from google.protobuf import field_mask_pb2 as _field_mask_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ProviderKey(_message.Message):
    __slots__ = ("name", "api_key", "base_url", "fingerprint", "last4", "update_time")
    NAME_FIELD_NUMBER: _ClassVar[int]
    API_KEY_FIELD_NUMBER: _ClassVar[int]
    BASE_URL_FIELD_NUMBER: _ClassVar[int]
    FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    LAST4_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    name: str
    api_key: str
    base_url: str
    fingerprint: str
    last4: str
    update_time: _timestamp_pb2.Timestamp
    def __init__(self, name: _Optional[str] = ..., api_key: _Optional[str] = ..., base_url: _Optional[str] = ..., fingerprint: _Optional[str] = ..., last4: _Optional[str] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CreateProviderKeyRequest(_message.Message):
    __slots__ = ("parent", "provider_key_id", "provider_key")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_KEY_ID_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_KEY_FIELD_NUMBER: _ClassVar[int]
    parent: str
    provider_key_id: str
    provider_key: ProviderKey
    def __init__(self, parent: _Optional[str] = ..., provider_key_id: _Optional[str] = ..., provider_key: _Optional[_Union[ProviderKey, _Mapping]] = ...) -> None: ...

class ListProviderKeysRequest(_message.Message):
    __slots__ = ("parent",)
    PARENT_FIELD_NUMBER: _ClassVar[int]
    parent: str
    def __init__(self, parent: _Optional[str] = ...) -> None: ...

class ListProviderKeysResponse(_message.Message):
    __slots__ = ("provider_keys",)
    PROVIDER_KEYS_FIELD_NUMBER: _ClassVar[int]
    provider_keys: _containers.RepeatedCompositeFieldContainer[ProviderKey]
    def __init__(self, provider_keys: _Optional[_Iterable[_Union[ProviderKey, _Mapping]]] = ...) -> None: ...

class DeleteProviderKeyRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class RetentionPolicy(_message.Message):
    __slots__ = ("name", "call_record_days", "transcript_days", "metadata_only", "update_time")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CALL_RECORD_DAYS_FIELD_NUMBER: _ClassVar[int]
    TRANSCRIPT_DAYS_FIELD_NUMBER: _ClassVar[int]
    METADATA_ONLY_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    name: str
    call_record_days: int
    transcript_days: int
    metadata_only: bool
    update_time: _timestamp_pb2.Timestamp
    def __init__(self, name: _Optional[str] = ..., call_record_days: _Optional[int] = ..., transcript_days: _Optional[int] = ..., metadata_only: _Optional[bool] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class GetRetentionPolicyRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class UpdateRetentionPolicyRequest(_message.Message):
    __slots__ = ("retention_policy", "update_mask")
    RETENTION_POLICY_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    retention_policy: RetentionPolicy
    update_mask: _field_mask_pb2.FieldMask
    def __init__(self, retention_policy: _Optional[_Union[RetentionPolicy, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ...) -> None: ...

class RotateDataKeyRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class RotateDataKeyResponse(_message.Message):
    __slots__ = ("version",)
    VERSION_FIELD_NUMBER: _ClassVar[int]
    version: int
    def __init__(self, version: _Optional[int] = ...) -> None: ...

class ShredDataKeysRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ShredDataKeysResponse(_message.Message):
    __slots__ = ("destroyed_keys",)
    DESTROYED_KEYS_FIELD_NUMBER: _ClassVar[int]
    destroyed_keys: int
    def __init__(self, destroyed_keys: _Optional[int] = ...) -> None: ...
