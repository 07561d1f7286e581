"""openapi/voiceai.yaml and the front's copy are what `make openapi` writes now, and valid OpenAPI 3.1."""

from __future__ import annotations

import json

import yaml
from openapi_spec_validator import validate

from tenant_svc.rest.openapi import JSON_OUT, YAML_OUT, openapi_path, render_files
from tenant_svc.rest.routes import RouteTable


def test_the_committed_spec_is_fresh() -> None:
    text_yaml, text_json = render_files()
    assert YAML_OUT.read_text() == text_yaml, "openapi/voiceai.yaml is stale: run `make openapi`"
    assert JSON_OUT.read_text() == text_json, "tenant_svc/rest/openapi.json is stale: run `make openapi`"


def test_the_spec_validates_and_covers_every_route() -> None:
    document = yaml.safe_load(YAML_OUT.read_text())
    validate(document)
    assert document == json.loads(JSON_OUT.read_text())
    grpc_methods = {
        op["x-grpc-method"]
        for item in document["paths"].values()
        for op in item.values()
        if "x-grpc-method" in op
    }
    assert grpc_methods == {r.full_method for r in RouteTable.from_descriptors().routes}
    ids = [op["operationId"] for item in document["paths"].values() for op in item.values()]
    assert len(ids) == len(set(ids)) and "TenantService_GetAgent" in ids  # what client generators name


def test_comments_become_descriptions_and_errors_are_status() -> None:
    document = json.loads(JSON_OUT.read_text())
    agent = document["components"]["schemas"]["voiceai.tenant.v1.Agent"]
    assert agent["description"].startswith("An AI agent")
    assert agent["properties"]["revision"]["readOnly"] is True
    assert agent["properties"]["revision"]["type"] == "string"  # int64 per proto3 JSON
    op = document["paths"]["/v1/tenants/{tenant}/agents/{agent}"]["get"]
    assert op["responses"]["default"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "google.rpc.Status"
    )
    assert document["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"


def test_multi_segment_variables_become_one_parameter_per_segment() -> None:
    found = RouteTable.from_descriptors().find("POST", "/v1/tenants/a/apiKeys/b:revoke")
    assert found is not None
    assert openapi_path(found[0]) == ("/v1/tenants/{tenant}/apiKeys/{apiKey}:revoke", ["tenant", "apiKey"])
