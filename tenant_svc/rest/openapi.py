"""OpenAPI 3.1 from the same descriptors and route table the front serves.

``python -m tenant_svc.rest.openapi`` (``make openapi``) writes ``openapi/voiceai.yaml`` and the
copy the front serves (``tenant_svc/rest/openapi.json``); the proto comments, read from a
descriptor set compiled with source info, become the descriptions. A test fails when either file
is stale. Path variables that span segments (``{name=tenants/*/agents/*}``) become one parameter
per ``*`` (``/v1/tenants/{tenant}/agents/{agent}``): OpenAPI parameters cannot hold a ``/``.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor

from tenant_svc.rest.errors import HTTP_STATUS
from tenant_svc.rest.routes import Route, exposed_services, routes_of

ROOT = Path(__file__).resolve().parents[2]
YAML_OUT = ROOT / "openapi" / "voiceai.yaml"
JSON_OUT = Path(__file__).parent / "openapi.json"
STATUS_REF = {"$ref": "#/components/schemas/google.rpc.Status"}
_WKT: dict[str, dict[str, Any]] = {
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    "google.protobuf.Duration": {
        "type": "string",
        "pattern": r"^-?[0-9]+(\.[0-9]{1,9})?s$",
        "examples": ["30s"],
    },
    "google.protobuf.FieldMask": {"type": "string", "description": "Comma-separated camelCase field paths."},
    "google.protobuf.Empty": {"type": "object", "additionalProperties": False},
    "google.protobuf.Struct": {"type": "object"},
    "google.protobuf.Value": {},
    "google.protobuf.Any": {
        "type": "object",
        "properties": {"@type": {"type": "string"}},
        "required": ["@type"],
    },
    "google.protobuf.StringValue": {"type": "string"},
    "google.protobuf.BoolValue": {"type": "boolean"},
    "google.protobuf.Int32Value": {"type": "integer", "format": "int32"},
    "google.protobuf.Int64Value": {"type": "string", "format": "int64"},
    "google.protobuf.DoubleValue": {"type": "number"},
}
_SCALARS: dict[int, dict[str, Any]] = {
    FieldDescriptor.TYPE_STRING: {"type": "string"},
    FieldDescriptor.TYPE_BOOL: {"type": "boolean"},
    FieldDescriptor.TYPE_BYTES: {"type": "string", "contentEncoding": "base64"},
    FieldDescriptor.TYPE_DOUBLE: {"type": "number"},
    FieldDescriptor.TYPE_FLOAT: {"type": "number"},
    FieldDescriptor.TYPE_INT32: {"type": "integer", "format": "int32"},
    FieldDescriptor.TYPE_SINT32: {"type": "integer", "format": "int32"},
    FieldDescriptor.TYPE_SFIXED32: {"type": "integer", "format": "int32"},
    FieldDescriptor.TYPE_UINT32: {"type": "integer", "format": "int32", "minimum": 0},
    FieldDescriptor.TYPE_FIXED32: {"type": "integer", "format": "int32", "minimum": 0},
    # proto3 JSON writes 64-bit integers as strings (they do not fit a JS number).
    FieldDescriptor.TYPE_INT64: {"type": "string", "format": "int64", "pattern": "^-?[0-9]+$"},
    FieldDescriptor.TYPE_SINT64: {"type": "string", "format": "int64", "pattern": "^-?[0-9]+$"},
    FieldDescriptor.TYPE_SFIXED64: {"type": "string", "format": "int64", "pattern": "^-?[0-9]+$"},
    FieldDescriptor.TYPE_UINT64: {"type": "string", "format": "uint64", "pattern": "^[0-9]+$"},
    FieldDescriptor.TYPE_FIXED64: {"type": "string", "format": "uint64", "pattern": "^[0-9]+$"},
}
_OUTPUT_ONLY, _REQUIRED = 3, 2  # google.api.FieldBehavior values


def _names_by_path(f: descriptor_pb2.FileDescriptorProto) -> dict[tuple[int, ...], str]:
    """Source-info paths -> full names, for one file."""
    names: dict[tuple[int, ...], str] = {}

    def enums(prefix: str, path: tuple[int, ...], items: Any) -> None:
        for i, e in enumerate(items):
            names[(*path, i)] = f"{prefix}.{e.name}"
            for j, v in enumerate(e.value):
                names[(*path, i, 2, j)] = f"{prefix}.{e.name}.{v.name}"

    def messages(prefix: str, path: tuple[int, ...], items: Any) -> None:
        for i, m in enumerate(items):
            full = f"{prefix}.{m.name}"
            names[(*path, i)] = full
            for j, field in enumerate(m.field):
                names[(*path, i, 2, j)] = f"{full}.{field.name}"
            messages(full, (*path, i, 3), m.nested_type)
            enums(full, (*path, i, 4), m.enum_type)

    messages(f.package, (4,), f.message_type)
    enums(f.package, (5,), f.enum_type)
    for i, s in enumerate(f.service):
        names[(6, i)] = f"{f.package}.{s.name}"
        for j, m in enumerate(s.method):
            names[(6, i, 2, j)] = f"{f.package}.{s.name}.{m.name}"
    return names


def comments_from(descriptor_set: descriptor_pb2.FileDescriptorSet) -> dict[str, str]:
    """Leading comments by full name (messages, fields, enums, services, methods)."""
    out: dict[str, str] = {}
    for f in descriptor_set.file:
        names = _names_by_path(f)
        for loc in f.source_code_info.location:
            name = names.get(tuple(loc.path))
            if name and loc.leading_comments.strip():
                out[name] = " ".join(line.strip() for line in loc.leading_comments.strip().splitlines())
    return out


def _param_name(collection: str) -> str:
    if collection.endswith("ies"):
        return collection[:-3] + "y"
    return collection[:-1] if collection.endswith("s") else collection


def openapi_path(route: Route) -> tuple[str, list[str]]:
    """``/v1/{name=tenants/*/agents/*}`` -> (``/v1/tenants/{tenant}/agents/{agent}``, names)."""
    names: list[str] = []

    def expand(found: re.Match[str]) -> str:
        pattern = found.group(2) or "*"
        segments = pattern.split("/")
        out = []
        for i, segment in enumerate(segments):
            if segment in ("*", "**"):
                name = _param_name(segments[i - 1]) if i > 0 else found.group(1).replace(".", "_")
                names.append(name)
                out.append(f"{{{name}}}")
            else:
                out.append(segment)
        return "/".join(out)

    return re.sub(r"\{([A-Za-z_][A-Za-z0-9_.]*)(?:=([^}]*))?\}", expand, route.template.template), names


class SchemaBook:
    """Component schemas for every message and enum reached, with the comments as descriptions."""

    def __init__(self, comments: dict[str, str]) -> None:
        self.comments = comments
        self.schemas: dict[str, Any] = {}

    def ref(self, descriptor: Descriptor | EnumDescriptor) -> dict[str, Any]:
        """A ``$ref`` to ``descriptor``'s schema (inlined for the well-known types)."""
        if descriptor.full_name in _WKT:
            return dict(_WKT[descriptor.full_name])
        if descriptor.full_name not in self.schemas:
            self.schemas[descriptor.full_name] = {}  # placeholder: recursion stops here
            if isinstance(descriptor, EnumDescriptor):
                self.schemas[descriptor.full_name] = self._enum(descriptor)
            else:
                self.schemas[descriptor.full_name] = self.message(descriptor)
        return {"$ref": f"#/components/schemas/{descriptor.full_name}"}

    def _enum(self, descriptor: EnumDescriptor) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": "string", "enum": [v.name for v in descriptor.values]}
        if (text := self.comments.get(descriptor.full_name)) is not None:
            schema["description"] = text
        return schema

    def field(self, field: FieldDescriptor) -> dict[str, Any]:
        """The schema of one field's JSON value."""
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            value = field.message_type.fields_by_name["value"]
            schema: dict[str, Any] = {"type": "object", "additionalProperties": self.field(value)}
        else:
            if field.message_type is not None:
                item = self.ref(field.message_type)
            elif field.enum_type is not None:
                item = self.ref(field.enum_type)
            else:
                item = dict(_SCALARS[field.type])
            repeated = field.is_repeated
            schema = {"type": "array", "items": item} if repeated else item
        behaviors = _behaviors(field)
        text = self.comments.get(field.full_name)
        if "$ref" in schema and (text or _OUTPUT_ONLY in behaviors):
            schema = {"allOf": [schema]}  # siblings of $ref are allowed in 3.1; allOf reads clearer
        if text:
            schema["description"] = text
        if _OUTPUT_ONLY in behaviors:
            schema["readOnly"] = True
        return schema

    def message(self, descriptor: Descriptor, skip: frozenset[str] = frozenset()) -> dict[str, Any]:
        """An object schema of ``descriptor``'s fields (``skip``: those bound elsewhere)."""
        props = {f.json_name: self.field(f) for f in descriptor.fields if f.name not in skip}
        schema: dict[str, Any] = {"type": "object", "properties": props, "additionalProperties": False}
        if (text := self.comments.get(descriptor.full_name)) is not None:
            schema["description"] = text
        return schema


def _behaviors(field: FieldDescriptor) -> list[int]:
    from google.api import field_behavior_pb2

    options = field.GetOptions()
    return list(options.Extensions[field_behavior_pb2.field_behavior])


def _query_parameters(book: SchemaBook, route: Route, bound: set[str]) -> list[dict[str, Any]]:
    if route.body == "*":
        return []
    params = []
    for f in route.method.input_type.fields:
        if f.name in bound or f.name == route.body:
            continue
        if f.message_type is not None and f.message_type.full_name not in _WKT:
            continue
        param: dict[str, Any] = {
            "name": f.json_name,
            "in": "query",
            "required": False,
            "schema": book.field(f),
        }
        if f.is_repeated:
            param["explode"] = True
        if (text := book.comments.get(f.full_name)) is not None:
            param["description"] = text
        params.append(param)
    return params


def _operation(book: SchemaBook, route: Route, names: list[str], op_id: str) -> dict[str, Any]:
    method = route.method
    bound = {v.field_path.split(".")[0] for v in route.template.variables}
    params: list[dict[str, Any]] = [
        {"name": n, "in": "path", "required": True, "schema": {"type": "string", "pattern": "^[^/]+$"}}
        for n in names
    ]
    params += _query_parameters(book, route, bound)
    full = f"{method.containing_service.full_name}.{method.name}"
    result = book.ref(method.output_type)
    if route.server_streaming:
        content = {
            "application/x-ndjson": {
                "schema": {"type": "object", "properties": {"result": result, "error": STATUS_REF}},
            },
            "text/event-stream": {"schema": {"type": "string"}},
        }
        description = "A stream of results, one JSON object per line (or Server-Sent Events)."
    else:
        content = {"application/json": {"schema": result}}
        description = "OK"
    operation: dict[str, Any] = {
        "operationId": op_id,
        "tags": [method.containing_service.name],
        "summary": book.comments.get(full, method.name).split(". ")[0],
        "description": book.comments.get(full, ""),
        "parameters": params,
        "responses": {
            "200": {"description": description, "content": content},
            "default": {
                "description": "An error: google.rpc.Status; the HTTP status follows its code.",
                "content": {"application/json": {"schema": STATUS_REF}},
            },
        },
        "x-grpc-method": route.full_method,
    }
    if route.body:
        if route.body == "*":
            body_schema = book.message(method.input_type, frozenset(bound))
        else:
            body_schema = book.field(method.input_type.fields_by_name[route.body])
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": body_schema}},
        }
    return operation


def _status_schemas(book: SchemaBook) -> None:
    codes = sorted(HTTP_STATUS, key=lambda c: c.value[0])
    book.schemas["google.rpc.Status"] = {
        "type": "object",
        "description": "An error: the gRPC code number, a message a person can act on, typed details.",
        "properties": {
            "code": {
                "type": "integer",
                "format": "int32",
                "description": "; ".join(f"{c.value[0]} {c.name} (HTTP {HTTP_STATUS[c]})" for c in codes),
            },
            "message": {"type": "string"},
            "details": {"type": "array", "items": _WKT["google.protobuf.Any"]},
        },
        "required": ["code"],
    }


def build_document(comments: dict[str, str]) -> dict[str, Any]:
    """The OpenAPI 3.1 document for every exposed service."""
    book = SchemaBook(comments)
    _status_schemas(book)
    paths: dict[str, dict[str, Any]] = {}
    tags = []
    for service in exposed_services():
        tags.append({"name": service.name, "description": comments.get(service.full_name, "")})
        seen: dict[str, int] = {}
        for route in routes_of(service):
            path, names = openapi_path(route)
            n = seen[route.method.name] = seen.get(route.method.name, 0) + 1
            # Unique across services, as client generators need (TenantService_GetAgent).
            op_id = f"{service.name}_{route.method.name}" + ("" if n == 1 else str(n))
            paths.setdefault(path, {})[route.http_method.lower()] = _operation(book, route, names, op_id)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "voiceai-mesh API",
            "version": "v1",
            "description": "Generated from the protos' google.api.http annotations; the same RPCs over "
            "gRPC. Send `Authorization: Bearer <JWT or API key>`; the tenant is taken from the path "
            "(or `X-Tenant-Id`).",
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "tags": tags,
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A JWT from the identity provider, or an API key `vai_<id>_<secret>`.",
                },
            },
            "schemas": dict(sorted(book.schemas.items())),
        },
    }


def compiled_comments() -> dict[str, str]:
    """Compiles protos/ with source info (grpc_tools, a dev dependency) and returns the comments."""
    import tempfile

    import google.api
    from grpc_tools import protoc

    proto_root = ROOT / "protos"
    includes = [
        str(proto_root),
        str(Path(protoc.__file__).parent / "_proto"),
        str(Path(google.api.__path__[0]).parent.parent),
    ]
    protos = sorted(str(p.relative_to(proto_root)) for p in proto_root.rglob("*.proto"))
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "set.pb"
        args = [
            "protoc",
            *(f"-I{d}" for d in includes),
            "--include_source_info",
            f"--descriptor_set_out={out}",
        ]
        if protoc.main([*args, *protos]) != 0:
            raise SystemExit("protoc failed")
        return comments_from(descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()))


def render_files() -> tuple[str, str]:
    """(YAML, JSON) text of the document, as `make openapi` writes them."""
    import yaml

    document = build_document(compiled_comments())
    text_yaml = (
        "# Generated by `make openapi` from protos/ (python -m tenant_svc.rest.openapi). Do not edit.\n"
    )
    text_yaml += yaml.safe_dump(document, sort_keys=False, allow_unicode=True, width=100)
    return text_yaml, json.dumps(document, indent=1, sort_keys=False) + "\n"


def main() -> None:
    """Write openapi/voiceai.yaml and the served copy."""
    argparse.ArgumentParser(prog="python -m tenant_svc.rest.openapi", description=__doc__).parse_args()
    text_yaml, text_json = render_files()
    YAML_OUT.parent.mkdir(parents=True, exist_ok=True)
    YAML_OUT.write_text(text_yaml)
    JSON_OUT.write_text(text_json)
    print(f"wrote {YAML_OUT.relative_to(ROOT)} and {JSON_OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
