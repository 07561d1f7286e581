"""Path templates, the route table read from the descriptors, query/body transcoding and the
google.rpc code -> HTTP status table."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2, status_pb2

from tenant_svc.rest.errors import HTTP_STATUS, status_json
from tenant_svc.rest.routes import RouteTable, TemplateError, compile_template
from tenant_svc.rest.transcode import BadRequest, build_request

TABLE = RouteTable.from_descriptors()


def test_templates_capture_variables_and_verbs() -> None:
    t = compile_template("/v1/{name=tenants/*/apiKeys/*}:revoke")
    assert t.match("/v1/tenants/a/apiKeys/k1:revoke") == {"name": "tenants/a/apiKeys/k1"}
    assert t.match("/v1/tenants/a/apiKeys/k1") is None
    assert t.match("/v1/tenants/a/b/apiKeys/k1:revoke") is None
    assert compile_template("/v1/{x}/y").match("/v1/abc/y") == {"x": "abc"}
    assert compile_template("/v1/{path=files/**}").match("/v1/files/a/b/c") == {"path": "files/a/b/c"}


@pytest.mark.parametrize("bad", ["v1/x", "/v1/{name=tenants/*", "/v1/{name=ten*ants}"])
def test_malformed_templates_are_refused(bad: str) -> None:
    with pytest.raises(TemplateError):
        compile_template(bad)


def test_the_table_has_every_binding_and_no_internal_service() -> None:
    names = {r.full_method for r in TABLE.routes}
    assert "/voiceai.tenant.v1.TenantService/GetAgent" in names
    assert "/voiceai.telephony.v1.TelephonyService/CreateOutboundCall" in names
    assert not any("InternalService/" in n for n in names)
    assert not any(n.startswith("/voiceai.gateway.") for n in names)  # bidi Converse: gRPC only
    assert TABLE.allowed("/v1/tenants/a/agents/b") == ["DELETE", "GET", "PATCH"]


def _route(method: str, path: str):  # type: ignore[no-untyped-def]
    found = TABLE.find(method, path)
    assert found is not None
    return found


def test_field_body_query_and_path_fill_the_request() -> None:
    route, variables = _route("PATCH", "/v1/tenants/a/agents/b")
    req = build_request(
        route, variables, [("updateMask", "greeting,voice")], b'{"greeting": "hi", "name": "x"}'
    )
    assert req.agent.name == "tenants/a/agents/b"  # the path wins over the body
    assert list(req.update_mask.paths) == ["greeting", "voice"] and req.agent.greeting == "hi"


def test_star_body_refuses_query_parameters() -> None:
    route, variables = _route("POST", "/v1/tenants/a/apiKeys/k:revoke")
    with pytest.raises(BadRequest, match="query parameters are not allowed"):
        build_request(route, variables, [("x", "1")], b"{}")


@pytest.mark.parametrize(
    ("query", "body", "words"),
    [
        ([("pageSize", "ten")], b"", "must be an integer"),
        ([("nope", "1")], b"", "unknown field 'nope'"),
        ([("parent", "tenants/b")], b"", "already sets"),
        ([("pageSize", "1"), ("pageSize", "2")], b"", "given twice"),
        ([], b'{"a": 1}', "takes no body"),
    ],
)
def test_bad_queries_name_what_is_wrong(query: list[tuple[str, str]], body: bytes, words: str) -> None:
    route, variables = _route("GET", "/v1/tenants/a/agents")
    with pytest.raises(BadRequest, match=words):
        build_request(route, variables, query, body)


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1]", "must be a JSON object"),
        (b'{"systemPromt": "x"}', "systemPromt"),
        (b'{"keyterms": "one"}', "keyterms"),
        (b'{"maxCallDuration": 5}', "maxCallDuration"),
    ],
)
def test_bad_bodies_name_what_is_wrong(body: bytes, words: str) -> None:
    route, variables = _route("POST", "/v1/tenants/a/agents")
    with pytest.raises(BadRequest, match=words):
        build_request(route, variables, [], body)


def test_every_grpc_code_has_the_documented_http_status() -> None:
    assert set(HTTP_STATUS) == set(grpc.StatusCode)
    assert HTTP_STATUS[grpc.StatusCode.NOT_FOUND] == 404
    assert HTTP_STATUS[grpc.StatusCode.FAILED_PRECONDITION] == 400
    assert HTTP_STATUS[grpc.StatusCode.RESOURCE_EXHAUSTED] == 429
    assert HTTP_STATUS[grpc.StatusCode.UNAVAILABLE] == 503
    assert HTTP_STATUS[grpc.StatusCode.CANCELLED] == 499


def test_status_json_keeps_typed_details() -> None:
    status = status_pb2.Status(code=8, message="slow down")
    status.details.add().Pack(error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=3)))
    data = status_json(status)
    assert data["code"] == 8 and data["details"][0]["@type"].endswith("google.rpc.RetryInfo")
    assert data["details"][0]["retryDelay"] == "3s"


def test_additional_bindings_and_custom_verbs_each_become_a_binding() -> None:
    from google.api import http_pb2

    from tenant_svc.rest.routes import _bindings

    rule = http_pb2.HttpRule(get="/v1/{name=tenants/*/agents/*}", response_body="agent")
    rule.additional_bindings.add(post="/v1/{name=tenants/*/agents/*}:fetch", body="*")
    rule.additional_bindings.add(custom=http_pb2.CustomHttpPattern(kind="HEAD", path="/v1/{name=agents/*}"))
    assert _bindings(rule) == [
        ("GET", "/v1/{name=tenants/*/agents/*}", "", "agent"),
        ("POST", "/v1/{name=tenants/*/agents/*}:fetch", "*", ""),
        ("HEAD", "/v1/{name=agents/*}", "", ""),
    ]
