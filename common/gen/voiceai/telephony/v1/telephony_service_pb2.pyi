import datetime

from google.api import annotations_pb2 as _annotations_pb2
from google.api import client_pb2 as _client_pb2
from google.api import field_behavior_pb2 as _field_behavior_pb2
from google.api import resource_pb2 as _resource_pb2
from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CreateOutboundCallRequest(_message.Message):
    __slots__ = ("parent", "agent", "to_number", "from_number", "ringing_timeout")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    AGENT_FIELD_NUMBER: _ClassVar[int]
    TO_NUMBER_FIELD_NUMBER: _ClassVar[int]
    FROM_NUMBER_FIELD_NUMBER: _ClassVar[int]
    RINGING_TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    parent: str
    agent: str
    to_number: str
    from_number: str
    ringing_timeout: _duration_pb2.Duration
    def __init__(self, parent: _Optional[str] = ..., agent: _Optional[str] = ..., to_number: _Optional[str] = ..., from_number: _Optional[str] = ..., ringing_timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class CreateOutboundCallResponse(_message.Message):
    __slots__ = ("state", "room", "participant_identity", "sip_status_code", "sip_status", "reason", "event_time")
    class State(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        STATE_UNSPECIFIED: _ClassVar[CreateOutboundCallResponse.State]
        STATE_DIALING: _ClassVar[CreateOutboundCallResponse.State]
        STATE_RINGING: _ClassVar[CreateOutboundCallResponse.State]
        STATE_ANSWERED: _ClassVar[CreateOutboundCallResponse.State]
        STATE_FAILED: _ClassVar[CreateOutboundCallResponse.State]
        STATE_ENDED: _ClassVar[CreateOutboundCallResponse.State]
    STATE_UNSPECIFIED: CreateOutboundCallResponse.State
    STATE_DIALING: CreateOutboundCallResponse.State
    STATE_RINGING: CreateOutboundCallResponse.State
    STATE_ANSWERED: CreateOutboundCallResponse.State
    STATE_FAILED: CreateOutboundCallResponse.State
    STATE_ENDED: CreateOutboundCallResponse.State
    STATE_FIELD_NUMBER: _ClassVar[int]
    ROOM_FIELD_NUMBER: _ClassVar[int]
    PARTICIPANT_IDENTITY_FIELD_NUMBER: _ClassVar[int]
    SIP_STATUS_CODE_FIELD_NUMBER: _ClassVar[int]
    SIP_STATUS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    EVENT_TIME_FIELD_NUMBER: _ClassVar[int]
    state: CreateOutboundCallResponse.State
    room: str
    participant_identity: str
    sip_status_code: int
    sip_status: str
    reason: str
    event_time: _timestamp_pb2.Timestamp
    def __init__(self, state: _Optional[_Union[CreateOutboundCallResponse.State, str]] = ..., room: _Optional[str] = ..., participant_identity: _Optional[str] = ..., sip_status_code: _Optional[int] = ..., sip_status: _Optional[str] = ..., reason: _Optional[str] = ..., event_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...
