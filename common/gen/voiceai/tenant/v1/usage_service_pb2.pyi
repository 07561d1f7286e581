import datetime

from google.api import annotations_pb2 as _annotations_pb2
from google.api import client_pb2 as _client_pb2
from google.api import field_behavior_pb2 as _field_behavior_pb2
from google.api import resource_pb2 as _resource_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class UsageGroupBy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    USAGE_GROUP_BY_UNSPECIFIED: _ClassVar[UsageGroupBy]
    USAGE_GROUP_BY_AGENT: _ClassVar[UsageGroupBy]
    USAGE_GROUP_BY_PROVIDER: _ClassVar[UsageGroupBy]
    USAGE_GROUP_BY_MODEL: _ClassVar[UsageGroupBy]
    USAGE_GROUP_BY_DAY: _ClassVar[UsageGroupBy]
    USAGE_GROUP_BY_MONTH: _ClassVar[UsageGroupBy]
    USAGE_GROUP_BY_COMPONENT: _ClassVar[UsageGroupBy]

class UsageExportFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    USAGE_EXPORT_FORMAT_UNSPECIFIED: _ClassVar[UsageExportFormat]
    USAGE_EXPORT_FORMAT_CSV: _ClassVar[UsageExportFormat]
    USAGE_EXPORT_FORMAT_JSONL: _ClassVar[UsageExportFormat]
USAGE_GROUP_BY_UNSPECIFIED: UsageGroupBy
USAGE_GROUP_BY_AGENT: UsageGroupBy
USAGE_GROUP_BY_PROVIDER: UsageGroupBy
USAGE_GROUP_BY_MODEL: UsageGroupBy
USAGE_GROUP_BY_DAY: UsageGroupBy
USAGE_GROUP_BY_MONTH: UsageGroupBy
USAGE_GROUP_BY_COMPONENT: UsageGroupBy
USAGE_EXPORT_FORMAT_UNSPECIFIED: UsageExportFormat
USAGE_EXPORT_FORMAT_CSV: UsageExportFormat
USAGE_EXPORT_FORMAT_JSONL: UsageExportFormat

class ContractPrice(_message.Message):
    __slots__ = ("component", "provider", "model", "unit", "usd", "per")
    COMPONENT_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    UNIT_FIELD_NUMBER: _ClassVar[int]
    USD_FIELD_NUMBER: _ClassVar[int]
    PER_FIELD_NUMBER: _ClassVar[int]
    component: str
    provider: str
    model: str
    unit: str
    usd: str
    per: int
    def __init__(self, component: _Optional[str] = ..., provider: _Optional[str] = ..., model: _Optional[str] = ..., unit: _Optional[str] = ..., usd: _Optional[str] = ..., per: _Optional[int] = ...) -> None: ...

class ContractPrices(_message.Message):
    __slots__ = ("prices", "update_time")
    PRICES_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    prices: _containers.RepeatedCompositeFieldContainer[ContractPrice]
    update_time: _timestamp_pb2.Timestamp
    def __init__(self, prices: _Optional[_Iterable[_Union[ContractPrice, _Mapping]]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class GetContractPricesRequest(_message.Message):
    __slots__ = ("parent",)
    PARENT_FIELD_NUMBER: _ClassVar[int]
    parent: str
    def __init__(self, parent: _Optional[str] = ...) -> None: ...

class UpdateContractPricesRequest(_message.Message):
    __slots__ = ("parent", "prices")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    PRICES_FIELD_NUMBER: _ClassVar[int]
    parent: str
    prices: _containers.RepeatedCompositeFieldContainer[ContractPrice]
    def __init__(self, parent: _Optional[str] = ..., prices: _Optional[_Iterable[_Union[ContractPrice, _Mapping]]] = ...) -> None: ...

class UsageRow(_message.Message):
    __slots__ = ("agent", "component", "provider", "model", "unit", "period_start", "quantity_milli", "cost_micros", "unpriced_lines")
    AGENT_FIELD_NUMBER: _ClassVar[int]
    COMPONENT_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    UNIT_FIELD_NUMBER: _ClassVar[int]
    PERIOD_START_FIELD_NUMBER: _ClassVar[int]
    QUANTITY_MILLI_FIELD_NUMBER: _ClassVar[int]
    COST_MICROS_FIELD_NUMBER: _ClassVar[int]
    UNPRICED_LINES_FIELD_NUMBER: _ClassVar[int]
    agent: str
    component: str
    provider: str
    model: str
    unit: str
    period_start: str
    quantity_milli: int
    cost_micros: int
    unpriced_lines: int
    def __init__(self, agent: _Optional[str] = ..., component: _Optional[str] = ..., provider: _Optional[str] = ..., model: _Optional[str] = ..., unit: _Optional[str] = ..., period_start: _Optional[str] = ..., quantity_milli: _Optional[int] = ..., cost_micros: _Optional[int] = ..., unpriced_lines: _Optional[int] = ...) -> None: ...

class GetUsageRequest(_message.Message):
    __slots__ = ("parent", "start_time", "end_time", "group_by")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    GROUP_BY_FIELD_NUMBER: _ClassVar[int]
    parent: str
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    group_by: _containers.RepeatedScalarFieldContainer[UsageGroupBy]
    def __init__(self, parent: _Optional[str] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., group_by: _Optional[_Iterable[_Union[UsageGroupBy, str]]] = ...) -> None: ...

class GetUsageResponse(_message.Message):
    __slots__ = ("calls", "call_seconds", "cost_micros", "unpriced_lines", "rows")
    CALLS_FIELD_NUMBER: _ClassVar[int]
    CALL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    COST_MICROS_FIELD_NUMBER: _ClassVar[int]
    UNPRICED_LINES_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    calls: int
    call_seconds: float
    cost_micros: int
    unpriced_lines: int
    rows: _containers.RepeatedCompositeFieldContainer[UsageRow]
    def __init__(self, calls: _Optional[int] = ..., call_seconds: _Optional[float] = ..., cost_micros: _Optional[int] = ..., unpriced_lines: _Optional[int] = ..., rows: _Optional[_Iterable[_Union[UsageRow, _Mapping]]] = ...) -> None: ...

class ListUsageRequest(_message.Message):
    __slots__ = ("parent", "start_time", "end_time", "group_by", "page_size", "page_token")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    GROUP_BY_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    parent: str
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    group_by: _containers.RepeatedScalarFieldContainer[UsageGroupBy]
    page_size: int
    page_token: str
    def __init__(self, parent: _Optional[str] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., group_by: _Optional[_Iterable[_Union[UsageGroupBy, str]]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListUsageResponse(_message.Message):
    __slots__ = ("rows", "next_page_token")
    ROWS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    rows: _containers.RepeatedCompositeFieldContainer[UsageRow]
    next_page_token: str
    def __init__(self, rows: _Optional[_Iterable[_Union[UsageRow, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class ExportUsageRequest(_message.Message):
    __slots__ = ("parent", "start_time", "end_time", "group_by", "format")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    GROUP_BY_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    parent: str
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    group_by: _containers.RepeatedScalarFieldContainer[UsageGroupBy]
    format: UsageExportFormat
    def __init__(self, parent: _Optional[str] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., group_by: _Optional[_Iterable[_Union[UsageGroupBy, str]]] = ..., format: _Optional[_Union[UsageExportFormat, str]] = ...) -> None: ...

class ExportUsageResponse(_message.Message):
    __slots__ = ("content_type", "data")
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    content_type: str
    data: bytes
    def __init__(self, content_type: _Optional[str] = ..., data: _Optional[bytes] = ...) -> None: ...
