"""HTTP/JSON <-> protobuf for one route, per the ``google.api.http`` rules and proto3 JSON mapping.

The request message is built in the order the rules define: the body (the whole message for
``body: "*"``, one field for ``body: "field"``), then query parameters for every field neither
the path nor the body binds, then the path variables (which win). Unknown fields, in the body or
the query, are refused with their name.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from google.protobuf import json_format, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from tenant_svc.rest.routes import Route

# Messages that the JSON mapping writes as one string or scalar, so a query parameter can carry them.
_SCALAR_WKT = frozenset(
    {
        "google.protobuf.FieldMask",
        "google.protobuf.Timestamp",
        "google.protobuf.Duration",
        "google.protobuf.StringValue",
        "google.protobuf.BytesValue",
        "google.protobuf.Int64Value",
        "google.protobuf.UInt64Value",
        "google.protobuf.Int32Value",
        "google.protobuf.UInt32Value",
        "google.protobuf.BoolValue",
        "google.protobuf.DoubleValue",
        "google.protobuf.FloatValue",
    }
)
_INTS = frozenset(
    {
        FieldDescriptor.TYPE_INT32,
        FieldDescriptor.TYPE_SINT32,
        FieldDescriptor.TYPE_SFIXED32,
        FieldDescriptor.TYPE_UINT32,
        FieldDescriptor.TYPE_FIXED32,
    }
)


class BadRequest(ValueError):
    """The HTTP request cannot become the RPC's request message; the message says why."""


def message_class(descriptor: Descriptor) -> type[Message]:
    """The generated class for ``descriptor``."""
    return message_factory.GetMessageClass(descriptor)


def _field(descriptor: Descriptor, name: str) -> FieldDescriptor | None:
    found = descriptor.fields_by_name.get(name)
    if found is not None:
        return found
    return next((f for f in descriptor.fields if f.json_name == name), None)


def _resolve(descriptor: Any, path: str) -> list[FieldDescriptor]:
    fields: list[FieldDescriptor] = []
    current: Descriptor | None = descriptor
    for part in path.split("."):
        found = _field(current, part) if current is not None else None
        if found is None:
            raise BadRequest(f"unknown field {path!r} for {descriptor.full_name}")
        fields.append(found)
        current = found.message_type
    return fields


def _parse(data: Any, target: Message, where: str) -> None:
    try:
        json_format.ParseDict(data, target, ignore_unknown_fields=False)
    except json_format.ParseError as e:
        raise BadRequest(f"{where}: {e}") from None


def _query_value(field: FieldDescriptor, raw: str) -> Any:
    if field.type == FieldDescriptor.TYPE_BOOL:
        if raw.lower() not in ("true", "false", "1", "0"):
            raise BadRequest(f"query parameter {field.json_name!r} must be true or false, not {raw!r}")
        return raw.lower() in ("true", "1")
    if field.type in _INTS:
        try:
            return int(raw)
        except ValueError:
            raise BadRequest(f"query parameter {field.json_name!r} must be an integer, not {raw!r}") from None
    if field.type in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        try:
            return float(raw)
        except ValueError:
            raise BadRequest(f"query parameter {field.json_name!r} must be a number, not {raw!r}") from None
    return raw  # strings, enums by name, int64 as strings, and the scalar-like well-known types


def _query_dict(descriptor: Descriptor, query: Sequence[tuple[str, str]], bound: set[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, raw in query:
        fields = _resolve(descriptor, key)
        proto_path = ".".join(f.name for f in fields)
        if any(proto_path == b or proto_path.startswith(b + ".") for b in bound):
            raise BadRequest(f"query parameter {key!r} names a field the path or body already sets")
        leaf = fields[-1]
        if leaf.message_type is not None and leaf.message_type.full_name not in _SCALAR_WKT:
            raise BadRequest(f"query parameter {key!r} is a message; send it in the body")
        node = out
        for f in fields[:-1]:
            if f.is_repeated:
                raise BadRequest(f"query parameter {key!r} goes through a repeated field")
            node = node.setdefault(f.json_name, {})
        value = _query_value(leaf, raw)
        if leaf.is_repeated:
            node.setdefault(leaf.json_name, []).append(value)
        elif leaf.json_name in node:
            raise BadRequest(f"query parameter {key!r} is given twice")
        else:
            node[leaf.json_name] = value
    return out


def _set_path(message: Message, field_path: str, value: str) -> None:
    fields = _resolve(message.DESCRIPTOR, field_path)
    target = message
    for f in fields[:-1]:
        target = getattr(target, f.name)
    leaf = fields[-1]
    if leaf.type != FieldDescriptor.TYPE_STRING or leaf.is_repeated:
        raise BadRequest(f"path variable {field_path!r} must name a singular string field")
    setattr(target, leaf.name, value)


def build_request(
    route: Route, variables: Mapping[str, str], query: Sequence[tuple[str, str]], body: bytes
) -> Message:
    """The RPC's request message from the path ``variables``, ``query`` pairs and JSON ``body``."""
    request = message_class(route.method.input_type)()
    descriptor = route.method.input_type
    bound = set(variables)
    if route.body:
        data = _json_body(body)
        if route.body == "*":
            _parse(data, request, "body")
            bound.add("*")
        else:
            field = _resolve(descriptor, route.body)[-1]
            bound.add(route.body)
            _parse({field.json_name: data}, request, "body")
    elif body.strip():
        raise BadRequest(f"{route.http_method} {route.template.template} takes no body")
    if query:
        if "*" in bound:
            raise BadRequest("this method takes everything in the body; query parameters are not allowed")
        _parse(_query_dict(descriptor, query, bound), request, "query")
    for field_path, value in variables.items():
        _set_path(request, field_path, value)
    return request


def _json_body(body: bytes) -> Any:
    if not body.strip():
        return {}
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BadRequest(f"the body is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise BadRequest(f"the body must be a JSON object, not {type(data).__name__}")
    return data


def render(route: Route, response: Message) -> dict[str, Any]:
    """The response as proto3 JSON (``response_body`` picks one field when the rule names one)."""
    data = json_format.MessageToDict(response, preserving_proto_field_name=False)
    if route.response_body:
        field = _resolve(response.DESCRIPTOR, route.response_body)[-1]
        value = data.get(field.json_name, {})
        return value if isinstance(value, dict) else {"value": value}
    return data
