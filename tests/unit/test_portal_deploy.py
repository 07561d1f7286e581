"""deploy/components/portal as a cluster would see it (rendered by test_deploy_manifests' renderer
through overlays/production-portal): valid Kubernetes, the front's own command and settings, HTTP
probes on its health endpoints, the tenant Service it calls, and the policies that let it in."""

from __future__ import annotations

import importlib.util

import kubernetes_validate
import pytest

from tenant_svc.rest.settings import RestSettings
from tests.unit.test_deploy_manifests import K8S_VERSIONS, of_kind, rendered, template

TARGET = "overlays/production-portal"


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_the_portal_overlay_is_valid_kubernetes(version: str) -> None:
    for doc in rendered(TARGET):
        if doc["apiVersion"].startswith(("monitoring.coreos.com/", "cert-manager.io/")):
            continue  # a CRD, checked by test_deploy_manifests
        kubernetes_validate.validate(doc, version, strict=True)


def test_the_portal_runs_the_front_with_http_probes_and_its_own_settings() -> None:
    docs = rendered(TARGET)
    deployments = of_kind(docs, "Deployment")
    spec = template(deployments["portal"])
    (c,) = spec["containers"]
    assert c["args"] == ["tenant_svc.rest"] and importlib.util.find_spec("tenant_svc.rest.__main__")
    assert c["image"] == template(deployments["tenant"])["containers"][0]["image"]
    env = {e["name"]: e.get("value") for e in c["env"]}
    known = {f"VOICEAI_REST_{name.upper()}" for name in RestSettings.model_fields}
    assert set(env) <= known, set(env) - known
    assert int(env["VOICEAI_REST_PORT"]) == {p["name"]: p["containerPort"] for p in c["ports"]}["http"]
    probes = {
        name: c[name]["httpGet"]["path"] for name in ("startupProbe", "readinessProbe", "livenessProbe")
    }
    assert probes == {"startupProbe": "/healthz", "readinessProbe": "/readyz", "livenessProbe": "/healthz"}
    host, port = env["VOICEAI_REST_TENANT_ADDRESS"].rsplit(":", 1)
    tenant = of_kind(docs, "Service")["tenant"]
    assert host.split(".")[0] == "tenant"
    assert {p["name"]: p["port"] for p in tenant["spec"]["ports"]}["grpc"] == int(port)
    assert spec["securityContext"]["runAsNonRoot"] and c["securityContext"]["readOnlyRootFilesystem"]
    assert "portal" in of_kind(docs, "PodDisruptionBudget") and "portal" in of_kind(
        docs, "HorizontalPodAutoscaler"
    )


def test_tenant_svc_admits_the_portal_pods() -> None:
    docs = rendered(TARGET)
    labels = (
        template(of_kind(docs, "Deployment")["portal"])
        and of_kind(docs, "Deployment")["portal"]["spec"]["template"]["metadata"]["labels"]
    )
    rules = of_kind(docs, "NetworkPolicy")["tenant"]["spec"]["ingress"]
    peers = [p.get("podSelector", {}).get("matchLabels") for r in rules for p in r.get("from", [])]
    assert any(m and all(labels.get(k) == v for k, v in m.items()) for m in peers)
