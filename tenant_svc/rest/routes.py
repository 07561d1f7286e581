"""The REST routes, read from the ``google.api.http`` annotations of the proto descriptors.

No route is written by hand: every annotated RPC of every service in ``common.gen.voiceai``
(except ``*InternalService``, which is gateway-only) becomes one route per binding, its
``additional_bindings`` included. A path template such as ``/v1/{name=tenants/*/agents/*}:revoke``
compiles to a regular expression whose groups fill the request's fields.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from dataclasses import dataclass
from functools import cache

from google.api import annotations_pb2, http_pb2
from google.protobuf import descriptor_pool
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor

import common.gen.voiceai

HTTP_METHODS = ("get", "put", "post", "delete", "patch")
# Services the front never exposes: called by the gateway with its internal token only.
INTERNAL_SUFFIX = "InternalService"
_SEGMENT = "[^/]+"


@dataclass(frozen=True)
class PathVariable:
    """One ``{field.path=pattern}`` of a template: the field it fills and its pattern text."""

    field_path: str
    pattern: str


@dataclass(frozen=True)
class PathTemplate:
    """A compiled HTTP path template: the regex, its variables in order, and the literal text."""

    template: str
    regex: re.Pattern[str]
    variables: tuple[PathVariable, ...]

    def match(self, path: str) -> dict[str, str] | None:
        """The variables' values when ``path`` matches, else None."""
        found = self.regex.fullmatch(path)
        if found is None:
            return None
        return {v.field_path: found.group(f"v{i}") for i, v in enumerate(self.variables)}


class TemplateError(ValueError):
    """A ``google.api.http`` path template that does not follow the grammar."""


def _pattern_regex(pattern: str) -> str:
    parts = []
    for segment in pattern.split("/"):
        if segment == "**":
            parts.append(".+")
        elif segment == "*":
            parts.append(_SEGMENT)
        elif segment and "{" not in segment and "}" not in segment and "*" not in segment:
            parts.append(re.escape(segment))
        else:
            raise TemplateError(f"bad segment {segment!r} in path pattern {pattern!r}")
    return "/".join(parts)


_VARIABLE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_.]*)(?:=([^}]*))?\}")


def compile_template(template: str) -> PathTemplate:
    """Compiles ``template`` (the http.proto grammar: literals, ``*``, ``**``, variables, verb)."""
    if not template.startswith("/"):
        raise TemplateError(f"path template {template!r} must start with '/'")
    regex: list[str] = []
    variables: list[PathVariable] = []
    pos = 0
    for found in _VARIABLE.finditer(template):
        literal = template[pos : found.start()]
        regex.append(_literal_regex(literal))
        pattern = found.group(2) or "*"
        regex.append(f"(?P<v{len(variables)}>{_pattern_regex(pattern)})")
        variables.append(PathVariable(found.group(1), pattern))
        pos = found.end()
    regex.append(_literal_regex(template[pos:]))
    return PathTemplate(template, re.compile("".join(regex)), tuple(variables))


def _literal_regex(literal: str) -> str:
    if "{" in literal or "}" in literal:
        raise TemplateError(f"unbalanced braces in path template near {literal!r}")
    # A bare `*` / `**` segment outside a variable matches without capturing.
    return "/".join(".+" if s == "**" else _SEGMENT if s == "*" else re.escape(s) for s in literal.split("/"))


@dataclass(frozen=True)
class Route:
    """One HTTP binding of one RPC."""

    http_method: str
    template: PathTemplate
    body: str
    response_body: str
    method: MethodDescriptor

    @property
    def full_method(self) -> str:
        """The gRPC method path, ``/package.Service/Method``."""
        return f"/{self.method.containing_service.full_name}/{self.method.name}"

    @property
    def server_streaming(self) -> bool:
        """True for a server-streaming RPC (answered as NDJSON or SSE)."""
        return bool(self.method.server_streaming)


def _bindings(rule: http_pb2.HttpRule) -> list[tuple[str, str, str, str]]:
    kind = rule.WhichOneof("pattern")
    out: list[tuple[str, str, str, str]] = []
    if kind in HTTP_METHODS:
        out.append((kind.upper(), getattr(rule, kind), rule.body, rule.response_body))
    elif kind == "custom":
        out.append((rule.custom.kind.upper(), rule.custom.path, rule.body, rule.response_body))
    for extra in rule.additional_bindings:
        out.extend(_bindings(extra))
    return out


def routes_of(service: ServiceDescriptor) -> list[Route]:
    """Every binding of every annotated RPC of ``service`` (client-streaming RPCs excluded)."""
    out = []
    for method in service.methods:
        options = method.GetOptions()
        if not options.HasExtension(annotations_pb2.http) or method.client_streaming:
            continue
        for verb, path, body, response_body in _bindings(options.Extensions[annotations_pb2.http]):
            out.append(Route(verb, compile_template(path), body, response_body, method))
    return out


@cache
def exposed_services() -> tuple[ServiceDescriptor, ...]:
    """Every service in the generated voiceai code that has an annotated RPC, internal ones excluded."""
    files = []
    for info in pkgutil.walk_packages(common.gen.voiceai.__path__, "common.gen.voiceai."):
        if info.name.endswith("_pb2"):
            importlib.import_module(info.name)
            files.append(
                info.name.removeprefix("common.gen.").replace(".", "/").removesuffix("_pb2") + ".proto"
            )
    pool = descriptor_pool.Default()
    services = []
    for name in sorted(files):
        for service in pool.FindFileByName(name).services_by_name.values():
            if not service.name.endswith(INTERNAL_SUFFIX) and routes_of(service):
                services.append(service)
    return tuple(services)


class RouteTable:
    """Finds the route for an HTTP method and path, and the methods a path allows."""

    def __init__(self, routes: list[Route]) -> None:
        self.routes = routes

    @classmethod
    def from_descriptors(cls) -> RouteTable:
        """The table of every exposed service's annotated RPCs."""
        return cls([r for s in exposed_services() for r in routes_of(s)])

    def find(self, http_method: str, path: str) -> tuple[Route, dict[str, str]] | None:
        """The first route for ``http_method`` whose template matches ``path``, with its variables."""
        for route in self.routes:
            if route.http_method == http_method and (found := route.template.match(path)) is not None:
                return route, found
        return None

    def allowed(self, path: str) -> list[str]:
        """The HTTP methods some route accepts for ``path`` (for a 405's Allow header)."""
        return sorted({r.http_method for r in self.routes if r.template.match(path) is not None})
