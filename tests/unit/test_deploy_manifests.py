"""deploy/ as a cluster would see it: every manifest valid against the Kubernetes API schema
(offline, kubernetes-validate), each kustomization rendered here in plain Python (no kubectl or
kustomize binary), and the operating rules the services rely on checked as assertions: gRPC
probes on the right ports, resources, non-root, the gateway's ten-minute drain, a PDB and an HPA
per Deployment, references to ConfigMap and Secret keys that exist, addresses that name real
Services, network policies that let only the gateway (and the portal) in, placeholder secrets."""

from __future__ import annotations

import copy
import fnmatch
import functools
import importlib.util
import inspect
import json
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
# The oldest Kubernetes the manifests support (native gRPC probes are GA in 1.27) and a recent one.
K8S_VERSIONS = ("1.27.0", "1.35.0")
TARGETS = ("base", "overlays/production", "overlays/production-gpu", "overlays/production-livekit", "jobs")
LIVEKIT = "overlays/production-livekit"  # production + components/livekit
EXAMPLE_SECRETS = DEPLOY / "examples" / "secrets.example.yaml"
PLACEHOLDER = re.compile(r"^<[^<>]+>$")
# Deployment name -> (python -m package, gRPC port), as the services define them.
SERVICES = {
    "gateway": ("gateway", 50060),
    "stt": ("stt_svc", 50061),
    "llm": ("llm_svc", 50062),
    "tts": ("tts_svc", 50063),
    "tenant": ("tenant_svc", 50064),
}
LOADS_MODELS_OR_MIGRATES = {"stt", "tts", "tenant"}  # these need a startupProbe
# Who may open gRPC streams to each internal service; Consul's agents run the health checks.
ALLOWED_CALLERS = {
    "stt": {"gateway"},
    "llm": {"gateway"},
    "tts": {"gateway"},
    "tenant": {"gateway", "portal"},
}
CONSUL_NAMESPACE = "consul"
# What components/consul sets, until common.consul (being built) is merged: then its settings
# class is the reference, as for every other VOICEAI_* name.
PENDING_CONSUL_ENV = {
    "CONSUL_HTTP_ADDR",
    "CONSUL_HTTP_TOKEN",
    "VOICEAI_CONSUL_ADVERTISE_HOST",
    "VOICEAI_CONSUL_ZONE",
    "VOICEAI_CONSUL_GPU",
}
# Downward-API helpers for $(...) expansion, and the providers' own variable names.
OTHER_ENV = {"HOST_IP", "POD_IP", "DEEPGRAM_API_KEY", "OPENAI_API_KEY", "ELEVENLABS_API_KEY"}


# ------------------------------------------------------------------------- a small kustomize
KUSTOMIZATION_FIELDS = {"apiVersion", "kind", "resources", "components", "patches", "images"}
# Strategic-merge list keys this renderer knows; any other list in a patch replaces the original.
MERGE_BY_NAME = {"containers", "initContainers", "env", "volumes", "volumeMounts", "ports"}


# libyaml's loader when pyyaml was built with it: the same documents, several times faster.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_docs(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.load_all(path.read_text(), Loader=_LOADER) if doc]


def kustomization(directory: Path) -> dict[str, Any]:
    k = load_docs(directory / "kustomization.yaml")[0]
    unknown = set(k) - KUSTOMIZATION_FIELDS
    assert not unknown, f"{directory}: teach render() {sorted(unknown)} before using it"
    return k


def render(directory: Path, accumulated: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """What `kustomize build directory` gives for the fields above. A Component sees (and
    patches) everything accumulated so far, as in kustomize."""
    k = kustomization(directory)
    docs = list(accumulated or [])
    for entry in k.get("resources", []):
        path = (directory / entry).resolve()
        docs += render(path) if path.is_dir() else load_docs(path)
    for entry in k.get("components", []):
        docs = render((directory / entry).resolve(), docs)
    for entry in k.get("patches", []):
        assert set(entry) == {"path"}, "only strategic-merge patches from files are rendered here"
        for patch in load_docs(directory / entry["path"]):
            matches = [i for i, d in enumerate(docs) if ident(d) == ident(patch)]
            assert len(matches) == 1, f"patch {entry['path']} matches {len(matches)} resources"
            docs[matches[0]] = merge(docs[matches[0]], patch)
    for image in k.get("images", []):
        for doc in docs:
            for c in containers(doc):
                name, _, tag = c["image"].rpartition(":") if ":" in c["image"] else (c["image"], "", "")
                if name == image["name"]:
                    c["image"] = f"{image.get('newName', name)}:{image.get('newTag', tag)}"
    return docs


def merge(base: Any, patch: Any) -> Any:
    if not (isinstance(base, dict) and isinstance(patch, dict)):
        return copy.deepcopy(patch)
    out = copy.deepcopy(base)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif key in MERGE_BY_NAME and key in out:
            items = {item["name"]: item for item in out[key]}
            for item in value:
                items[item["name"]] = merge(items.get(item["name"], {}), item)
            out[key] = list(items.values())
        else:
            out[key] = merge(out.get(key), value)
    return out


# ------------------------------------------------------------------------------ helpers
def ident(doc: dict[str, Any]) -> tuple[str, str, str]:
    return doc["kind"], doc["metadata"].get("namespace", ""), doc["metadata"]["name"]


def pod_spec(doc: dict[str, Any]) -> dict[str, Any] | None:
    return doc["spec"]["template"]["spec"] if doc["kind"] in ("Deployment", "Job") else None


def template(doc: dict[str, Any]) -> dict[str, Any]:
    spec = pod_spec(doc)
    assert spec is not None, f"{ident(doc)} has no pod template"
    return spec


def containers(doc: dict[str, Any]) -> Iterator[dict[str, Any]]:
    spec = pod_spec(doc)
    if spec is not None:
        yield from spec.get("initContainers", []) + spec["containers"]


def of_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def env_value(container: dict[str, Any], name: str) -> str | None:
    return next((e.get("value") for e in container.get("env", []) if e["name"] == name), None)


# LiveKit's own config files (server and SIP), not Kubernetes manifests: test_livekit_deploy.py
# checks them.
LIVEKIT_CONFIGS = DEPLOY / "livekit"
# Prometheus rule files and Grafana dashboards, not Kubernetes manifests (tests/unit/test_observability.py).
OBSERVABILITY = DEPLOY / "observability"


def all_yaml_files() -> list[Path]:
    return sorted(
        p
        for p in DEPLOY.rglob("*")
        if p.suffix in (".yaml", ".yml")
        and LIVEKIT_CONFIGS not in p.parents
        and OBSERVABILITY not in p.parents
    )


@functools.cache
def _rendered(target: str) -> list[dict[str, Any]]:
    return render(DEPLOY / target)


def rendered(target: str) -> list[dict[str, Any]]:
    return copy.deepcopy(_rendered(target))


EXAMPLES = {d["metadata"]["name"]: d["stringData"] for d in load_docs(EXAMPLE_SECRETS)}


# --------------------------------------------------------------------------------- schema
def schema_checked_docs() -> list[dict[str, Any]]:
    """Every document as applied: rendered targets (patches merged) and the standalone example."""
    seen: dict[str, dict[str, Any]] = {}
    for doc in [d for t in TARGETS for d in rendered(t)] + load_docs(EXAMPLE_SECRETS):
        seen[json.dumps(doc, sort_keys=True)] = doc
    return list(seen.values())


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_document_is_valid_kubernetes(version: str) -> None:
    problems = []
    for doc in schema_checked_docs():
        if doc["apiVersion"].startswith(("monitoring.coreos.com/", "cert-manager.io/")):
            continue  # CRDs (Prometheus Operator, cert-manager): no schema ships; checked in their own tests
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            problems.append(f"{ident(doc)} at {'/'.join(map(str, e.absolute_path))}: {e.message}")
    assert not problems, "\n".join(problems)


def test_every_yaml_file_is_rendered_or_an_example() -> None:
    used = {EXAMPLE_SECRETS}
    for k in DEPLOY.rglob("kustomization.yaml"):
        spec = kustomization(k.parent)
        used.add(k)
        used |= {(k.parent / r).resolve() for r in spec.get("resources", []) if "." in Path(r).name}
        used |= {(k.parent / p["path"]).resolve() for p in spec.get("patches", [])}
    assert [p for p in all_yaml_files() if p.resolve() not in used] == []
    for target in TARGETS:
        assert "Secret" not in {d["kind"] for d in rendered(target)}, "secrets are never applied from here"


def test_secrets_under_deploy_hold_placeholders_only() -> None:
    for path in all_yaml_files():
        assert "PRIVATE KEY-----" not in path.read_text(), path
        for doc in (d for d in load_docs(path) if d["kind"] == "Secret"):
            assert "data" not in doc, f"{ident(doc)}: use stringData placeholders, never data"
            real = {k: v for k, v in doc["stringData"].items() if not PLACEHOLDER.match(str(v))}
            assert real == {}, f"{ident(doc)} holds values that are not <placeholders>"


# ---------------------------------------------------------------------------- workloads
@pytest.mark.parametrize("target", TARGETS)
def test_pods_run_non_root_with_resources(target: str) -> None:
    for doc in (d for d in rendered(target) if pod_spec(d) is not None):
        spec = template(doc)
        assert spec["securityContext"]["runAsNonRoot"] is True, ident(doc)
        assert spec["securityContext"]["runAsUser"] != 0 and spec["automountServiceAccountToken"] is False
        for c in containers(doc):
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True
            assert sc["capabilities"]["drop"] == ["ALL"], ident(doc)
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(c["resources"][kind]), f"{ident(doc)} {kind}"


@pytest.mark.parametrize("target", ["base", "overlays/production-gpu"])
def test_deployments_probe_grpc_and_drain(target: str) -> None:
    docs = rendered(target)
    config = of_kind(docs, "ConfigMap")["voiceai-config"]["data"]
    deployments = of_kind(docs, "Deployment")
    assert set(deployments) == set(SERVICES)
    for name, doc in deployments.items():
        package, port = SERVICES[name]
        spec = template(doc)
        (c,) = spec["containers"]
        assert c["args"] == [package] and importlib.util.find_spec(f"{package}.__main__"), name
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        # With mTLS (components/tls) kubelet probes a plaintext health-only port.
        health = (
            {"health": int(config["VOICEAI_TLS_HEALTH_PORT"])} if config.get("VOICEAI_TLS") == "mtls" else {}
        )
        assert ports == {"grpc": port, "metrics": int(config["VOICEAI_METRICS_PORT"]), **health}, name
        assert env_value(c, "VOICEAI_PORT") == str(port)
        probes = ["livenessProbe", "readinessProbe"] + (["startupProbe"] * (name in LOADS_MODELS_OR_MIGRATES))
        for probe in probes:
            assert set(c[probe]) & {"grpc", "httpGet", "tcpSocket", "exec"} == {"grpc"}, f"{name} {probe}"
            assert c[probe]["grpc"]["port"] in ports.values(), f"{name} {probe} port"
        # SIGTERM comes after preStop; the drain and closing must fit before the kubelet kills.
        (sleep, seconds) = c["lifecycle"]["preStop"]["exec"]["command"]
        drain = float(env_value(c, "VOICEAI_GRACE_PERIOD_S") or 0)
        drain += float(env_value(c, "VOICEAI_DRAIN_NOTICE_S") or 0)
        assert sleep == "sleep" and int(seconds) + drain + 10 <= spec["terminationGracePeriodSeconds"], name
    assert template(deployments["gateway"])["terminationGracePeriodSeconds"] == 600
    assert config["VOICEAI_HOST"] == "0.0.0.0" and config["VOICEAI_AUTH_MODE"] == "jwt"


@pytest.mark.parametrize("target", ["base", "overlays/production-gpu", LIVEKIT])
def test_every_deployment_has_a_pdb_and_an_hpa(target: str) -> None:
    from gateway.converse import ACTIVE_CALLS
    from gateway.livekit.calls import ACTIVE_CALLS as ROOM_CALLS

    docs = rendered(target)
    for name, doc in of_kind(docs, "Deployment").items():
        labels = doc["spec"]["template"]["metadata"]["labels"]
        pdbs = [
            p
            for p in of_kind(docs, "PodDisruptionBudget").values()
            if selects(p["spec"]["selector"]["matchLabels"], labels)
        ]
        assert len(pdbs) == 1, f"{name}: {len(pdbs)} PodDisruptionBudgets"
        hpas = [
            h
            for h in of_kind(docs, "HorizontalPodAutoscaler").values()
            if h["spec"]["scaleTargetRef"]["name"] == name
        ]
        assert len(hpas) == 1 and hpas[0]["spec"]["minReplicas"] >= 2, name
        assert "replicas" not in doc["spec"], f"{name}: the HPA owns the replica count"
        metrics = {m["type"]: m for m in hpas[0]["spec"]["metrics"]}
        assert metrics["Resource"]["resource"]["name"] == "cpu", name
        if name == "gateway":
            assert metrics["Pods"]["pods"]["metric"]["name"] == ACTIVE_CALLS.describe()[0].name
        if name == "gateway-livekit":
            # Room calls in progress, scaled out before a worker is full (LiveKit then sends it
            # no job).
            (c,) = template(doc)["containers"]
            assert metrics["Pods"]["pods"]["metric"]["name"] == ROOM_CALLS.describe()[0].name
            target_calls = float(metrics["Pods"]["pods"]["target"]["averageValue"])
            assert target_calls < int(env_value(c, "VOICEAI_LIVEKIT_MAX_CALLS") or 0)


@pytest.mark.parametrize("target", TARGETS)
def test_references_resolve(target: str) -> None:
    docs = rendered(target)
    # The Job is applied beside the base, whose ConfigMap it reads.
    maps = {n: d.get("data", {}) for n, d in of_kind(docs + rendered("base"), "ConfigMap").items()}
    issued = {d["spec"]["secretName"] for d in of_kind(docs, "Certificate").values()}  # by cert-manager
    for doc in (d for d in docs if pod_spec(d) is not None):
        spec = template(doc)
        for volume in spec.get("volumes", []):
            if "secret" in volume and volume["secret"]["secretName"] not in issued:
                keys = EXAMPLES[volume["secret"]["secretName"]]
                assert {i["key"] for i in volume["secret"].get("items", [])} <= set(keys), volume["name"]
        for c in containers(doc):
            mounts = {m["name"] for m in c.get("volumeMounts", [])}
            assert mounts <= {v["name"] for v in spec.get("volumes", [])}, ident(doc)
            config_sources = [s["configMapRef"]["name"] for s in c.get("envFrom", []) if "configMapRef" in s]
            for source in c.get("envFrom", []):
                if "secretRef" in source:  # whole-Secret sources must be optional and exemplified
                    assert source["secretRef"].get("optional") is True, ident(doc)
                    assert source["secretRef"]["name"] in EXAMPLES, ident(doc)
                else:
                    assert source["configMapRef"]["name"] in maps, ident(doc)
            defined: set[str] = set().union(*(maps[name] for name in config_sources))
            for env in c.get("env", []):
                ref = env.get("valueFrom", {})
                if "configMapKeyRef" in ref:
                    assert ref["configMapKeyRef"]["key"] in maps[ref["configMapKeyRef"]["name"]], env["name"]
                if "secretKeyRef" in ref:
                    assert ref["secretKeyRef"]["key"] in EXAMPLES[ref["secretKeyRef"]["name"]], env["name"]
                for used in re.findall(r"\$\((\w+)\)", env.get("value", "")):
                    assert used in defined, f"{env['name']} uses $({used}) before it is defined"
                defined.add(env["name"])


def settings_env_names() -> set[str]:
    from pydantic import AliasChoices

    from common.auth import AuthSettings
    from common.quotas import QuotaSettings
    from common.redis_conn import RedisSettings
    from common.settings import DiscoverySettings
    from common.tls import TlsSettings
    from gateway.app import Settings as Gateway
    from gateway.livekit.settings import LiveKitCredentials
    from gateway.livekit.settings import LiveKitSettings as LiveKitWorker
    from llm_svc.app import Settings as Llm
    from stt_svc.app import Settings as Stt
    from tenant_svc.db.database import DatabaseSettings
    from tenant_svc.telephony.settings import LiveKitSettings as LiveKitSip
    from tts_svc.app import Settings as Tts

    classes: list[Any] = []
    try:
        from common.consul import ConsulSettings  # type: ignore[import-not-found, unused-ignore]

        classes.append(ConsulSettings)
    except ImportError:
        names = set(PENDING_CONSUL_ENV)
    else:
        names = set()
    from common.crypto import KekSettings  # data protection (#14)
    from tenant_svc.retention import RetentionSettings

    classes += [KekSettings, RetentionSettings]
    for cls in (
        *classes,
        AuthSettings,
        TlsSettings,
        QuotaSettings,
        RedisSettings,
        DiscoverySettings,
        Gateway,
        Llm,
        Stt,
        Tts,
        DatabaseSettings,
        LiveKitCredentials,
        LiveKitWorker,
        LiveKitSip,
    ):
        for field, info in cls.model_fields.items():
            names.add((cls.model_config.get("env_prefix", "") + field).upper())
            if isinstance(info.validation_alias, AliasChoices):
                names |= {a for a in info.validation_alias.choices if isinstance(a, str) and a.isupper()}
    return names


@pytest.mark.parametrize("target", TARGETS)
def test_environment_names_are_settings_the_code_reads(target: str) -> None:
    docs = rendered(target)
    used = {k for m in of_kind(docs, "ConfigMap").values() for k in m.get("data", {})}
    used |= {e["name"] for d in docs for c in containers(d) for e in c.get("env", [])}
    unknown = used - settings_env_names() - OTHER_ENV
    assert unknown == set(), f"no settings field reads {sorted(unknown)} (a typo?)"


# ------------------------------------------------------------------------------ network
def test_addresses_name_services_and_their_grpc_ports() -> None:
    from common.settings import DiscoverySettings

    docs = rendered("base")
    config = of_kind(docs, "ConfigMap")["voiceai-config"]["data"]
    services = of_kind(docs, "Service")
    for field in DiscoverySettings.model_fields:
        for address in config[f"VOICEAI_{field.upper()}"].split(","):
            host, port = address.rsplit(":", 1)
            name, namespace, *domain = host.split(".")
            assert domain == ["svc", "cluster", "local"], address
            service = services[name]
            assert service["metadata"]["namespace"] == namespace, address
            assert {p["name"]: p["port"] for p in service["spec"]["ports"]}["grpc"] == int(port), address


def test_services_select_one_deployment_on_named_ports() -> None:
    docs = rendered("base")
    for name, service in of_kind(docs, "Service").items():
        pods = [
            d
            for d in of_kind(docs, "Deployment").values()
            if selects(service["spec"]["selector"], d["spec"]["template"]["metadata"]["labels"])
        ]
        assert [p["metadata"]["name"] for p in pods] == [name]
        container_ports = {p["name"]: p["containerPort"] for c in containers(pods[0]) for p in c["ports"]}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] == port["name"] and container_ports[port["name"]] == port["port"]
        assert {p["name"] for p in service["spec"]["ports"]} == {"grpc", "metrics"}


def label_selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """A LabelSelector (matchLabels and In/NotIn/Exists expressions) against pod labels."""
    for e in selector.get("matchExpressions", []):
        value = labels.get(e["key"])
        op = e["operator"]
        if (
            (op == "In" and value not in e["values"])
            or (op == "NotIn" and value in e["values"])
            or (op == "Exists" and value is None)
            or (op == "DoesNotExist" and value is not None)
        ):
            return False
    return selects(selector.get("matchLabels", {}), labels)


@pytest.mark.parametrize("target", ["base", LIVEKIT])
def test_only_the_gateway_and_portal_reach_internal_services(target: str) -> None:
    policies = list(of_kind(rendered(target), "NetworkPolicy").values())
    consul = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": CONSUL_NAMESPACE}}}
    # With components/livekit the LiveKit worker calls them as the gateway does.
    extra = {"gateway-livekit"} if target == LIVEKIT else set()
    for service, callers in ALLOWED_CALLERS.items():
        allowed = [
            {"podSelector": {"matchLabels": {"app.kubernetes.io/name": c}}} for c in callers | extra
        ] + [consul]
        labels = {"app.kubernetes.io/name": service, "app.kubernetes.io/part-of": "voiceai-mesh"}
        mine = [p for p in policies if label_selects(p["spec"]["podSelector"], labels)]
        assert mine, f"no NetworkPolicy selects {service}"
        grpc = {"grpc", str(SERVICES[service][1])}
        reached_by = set()
        for rule in (r for p in mine for r in p["spec"].get("ingress", [])):
            ports = {str(p["port"]) for p in rule.get("ports", [{"port": "grpc"}])}  # no ports: all
            if ports & grpc:
                assert rule.get("from"), f"{service}: gRPC open to every source"
                assert all(peer in allowed for peer in rule["from"]), f"{service}: {rule['from']}"
                reached_by |= {
                    peer["podSelector"]["matchLabels"]["app.kubernetes.io/name"]
                    for peer in rule["from"]
                    if "podSelector" in peer
                }
        assert extra <= reached_by, f"{service}: the LiveKit worker cannot reach it"


# ----------------------------------------------------------------------------- overlays
def test_production_scrapes_metrics_and_uses_the_registry_image() -> None:
    docs = rendered("overlays/production")
    (monitor,) = of_kind(docs, "ServiceMonitor").values()
    scraped = [
        s
        for s in of_kind(docs, "Service").values()
        if selects(monitor["spec"]["selector"]["matchLabels"], s["metadata"]["labels"])
    ]
    assert {s["metadata"]["name"] for s in scraped} == set(SERVICES)
    assert all(
        monitor["spec"]["endpoints"][0]["port"] in {p["name"] for p in s["spec"]["ports"]} for s in scraped
    )
    assert {c["image"] for d in docs for c in containers(d)} == {
        "registry.example.com/voiceai/voiceai-mesh:0.1.0"
    }


def test_consul_registers_the_pod_with_its_node_agent_in_production_only() -> None:
    for name, doc in of_kind(rendered("overlays/production"), "Deployment").items():
        (c,) = template(doc)["containers"]
        env = {e["name"]: e.get("value", e.get("valueFrom")) for e in c["env"]}
        assert env["HOST_IP"] == {"fieldRef": {"fieldPath": "status.hostIP"}}, name
        assert env["CONSUL_HTTP_ADDR"] == "http://$(HOST_IP):8500", name
        assert env["VOICEAI_CONSUL_ADVERTISE_HOST"] == "$(POD_IP)", name
        zone = "metadata.labels['topology.kubernetes.io/zone']"
        assert env["VOICEAI_CONSUL_ZONE"] == {"fieldRef": {"fieldPath": zone}}, name
    # Setting CONSUL_HTTP_ADDR is what turns Consul on: the base stays on static discovery.
    assert all(env_value(c, "CONSUL_HTTP_ADDR") is None for d in rendered("base") for c in containers(d))


def test_gpu_overlay_puts_speech_on_the_gpu_pool_only() -> None:
    base = of_kind(rendered("base"), "Deployment")
    gpu = of_kind(rendered("overlays/production-gpu"), "Deployment")
    toleration = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    for name in SERVICES:
        spec = template(gpu[name])
        limits = spec["containers"][0]["resources"]["limits"]
        on_gpu = name in ("stt", "tts")
        assert (limits.get("nvidia.com/gpu") == 1) is on_gpu, name
        assert (toleration in spec.get("tolerations", [])) is on_gpu, name
        # The patch adds to the base container; it does not replace it.
        assert limits["cpu"] == template(base[name])["containers"][0]["resources"]["limits"]["cpu"]
        # The GPU patch keeps the probes production gives (the health port, with mTLS).
        probe = template(of_kind(rendered("overlays/production"), "Deployment")[name])["containers"][0]
        assert spec["containers"][0]["readinessProbe"] == probe["readinessProbe"]


# ------------------------------------------------------------------------------- image
def test_migration_job_calls_what_tenant_svc_exports() -> None:
    from tenant_svc.db import database

    (job,) = of_kind(rendered("jobs"), "Job").values()
    code = next(containers(job))["args"][0]
    compile(code, "tenant-migrate", "exec")
    assert "from tenant_svc.db.database import DatabaseSettings, migrate" in code
    assert list(inspect.signature(database.migrate).parameters) == ["admin_url", "app_role"]


def test_image_runs_as_the_pods_user_and_carries_every_data_file() -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert dockerfile.count("FROM python:3.11-slim") == 2 and 'ENTRYPOINT ["python", "-m"]' in dockerfile
    (user,) = re.findall(r"^USER (\d+):(\d+)$", dockerfile, re.M)
    for doc in (d for t in TARGETS for d in rendered(t) if pod_spec(d) is not None):
        context = template(doc)["securityContext"]
        assert (str(context["runAsUser"]), str(context["runAsGroup"])) == user, ident(doc)
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    package_data = pyproject["tool"]["setuptools"]["package-data"]
    copied = re.findall(r"^COPY (\S+) /opt/venv/lib/python3\.11/site-packages/\1$", dockerfile, re.M)
    packages = {p.split("*")[0] for p in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]}
    for package in packages:
        for path in (ROOT / package).rglob("*"):
            if path.is_dir() or path.suffix == ".py" or "__pycache__" in path.parts:
                continue
            relative = path.relative_to(ROOT).as_posix()
            assert packaged(path, package_data) or any(relative.startswith(c + "/") for c in copied), (
                f"{relative} is not in the image: list it as package data in pyproject.toml"
            )


def packaged(path: Path, package_data: dict[str, list[str]]) -> bool:
    """Whether setuptools' package-data patterns (relative to their package) take ``path``."""
    for package, patterns in package_data.items():
        base = path.parent if package == "*" else ROOT / package.replace(".", "/")
        if path.is_relative_to(base) and any(
            fnmatch.fnmatch(path.relative_to(base).as_posix(), p) for p in patterns
        ):
            return True
    return False


def test_renderer_refuses_what_it_does_not_implement(tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text("resources: []\nconfigMapGenerator: []\n")
    with pytest.raises(AssertionError, match="configMapGenerator"):
        render(tmp_path)


# ------------------------------------------------------------------------------ LiveKit
def livekit_env(c: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in c.get("env", [])}


def test_livekit_component_runs_the_worker_with_health_probes_and_drain() -> None:
    from gateway.livekit.settings import LiveKitSettings

    docs = rendered(LIVEKIT)
    config = of_kind(docs, "ConfigMap")["voiceai-config"]["data"]
    deployments = of_kind(docs, "Deployment")
    assert set(deployments) == set(SERVICES) | {"gateway-livekit"}
    doc = deployments["gateway-livekit"]
    spec = template(doc)
    (c,) = spec["containers"]
    assert c["args"] == ["gateway.livekit"] and importlib.util.find_spec("gateway.livekit.__main__")
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    http_port = int(env_value(c, "VOICEAI_LIVEKIT_HTTP_PORT") or LiveKitSettings().http_port)
    assert ports == {"grpc": 50060, "metrics": int(config["VOICEAI_METRICS_PORT"]), "health": http_port}
    assert env_value(c, "VOICEAI_PORT") == "50060"
    # livekit-agents' worker endpoint ("/": 200 while it can reach LiveKit), not gRPC.
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert set(c[probe]) & {"grpc", "httpGet", "tcpSocket", "exec"} == {"httpGet"}, probe
        get = c[probe]["httpGet"]
        assert get["path"] == "/" and ports.get(get["port"], get["port"]) == http_port, probe
    # Room calls (VOICEAI_LIVEKIT_DRAIN_TIMEOUT_S) and Converse (VOICEAI_GRACE_PERIOD_S) drain side
    # by side after preStop; both must fit before the kubelet kills.
    (sleep, seconds) = c["lifecycle"]["preStop"]["exec"]["command"]
    drains = [env_value(c, n) for n in ("VOICEAI_LIVEKIT_DRAIN_TIMEOUT_S", "VOICEAI_GRACE_PERIOD_S")]
    assert None not in drains, "set both drains explicitly: the worker's default is 600 s"
    grace = spec["terminationGracePeriodSeconds"]
    assert sleep == "sleep" and int(seconds) + max(float(d or 0) for d in drains) + 10 <= grace
    assert grace == template(deployments["gateway"])["terminationGracePeriodSeconds"]
    # Same image, user and internal-token signing key as the gateway.
    gateway = template(deployments["gateway"])
    assert c["image"] == gateway["containers"][0]["image"]
    assert spec["securityContext"] == gateway["securityContext"]
    assert env_value(c, "VOICEAI_AUTH_INTERNAL_KEY_FILE") == env_value(
        gateway["containers"][0], "VOICEAI_AUTH_INTERNAL_KEY_FILE"
    )


def test_livekit_credentials_come_from_the_secret_for_the_worker_and_tenant_svc() -> None:
    from pydantic import SecretStr

    from gateway.livekit.settings import LiveKitSettings as Worker
    from tenant_svc.telephony.settings import CREDENTIAL_VARIABLES
    from tenant_svc.telephony.settings import LiveKitSettings as Sip

    deployments = of_kind(rendered(LIVEKIT), "Deployment")
    shared = of_kind(rendered(LIVEKIT), "ConfigMap")["voiceai-livekit-config"]["data"]
    for name, required in (("gateway-livekit", True), ("tenant", False)):
        (c,) = template(deployments[name])["containers"]
        env = livekit_env(c)
        for var in CREDENTIAL_VARIABLES:
            ref = env[var]["valueFrom"]["secretKeyRef"]
            assert (ref["name"], ref["key"]) == ("voiceai-livekit", var), f"{name} {var}"
            # The worker refuses to start without them; tenant_svc serves with provisioning off.
            assert ref.get("optional", False) is not required, f"{name} {var}"
        # Both read the shared LiveKit settings (the agent name must be the same on both sides).
        assert [s["configMapRef"]["name"] for s in c["envFrom"]] == [
            "voiceai-config",
            "voiceai-livekit-config",
        ]
    assert shared["VOICEAI_LIVEKIT_AGENT_NAME"] == Worker().agent_name == Sip().agent_name
    # tenant_svc's secret settings (the carrier's digest password) never sit in plain env.
    (tenant,) = template(deployments["tenant"])["containers"]
    env = livekit_env(tenant)
    for field, info in Sip.model_fields.items():
        var = f"VOICEAI_LIVEKIT_{field.upper()}"
        if info.annotation is SecretStr and var in env:
            assert "secretKeyRef" in env[var]["valueFrom"], var
        assert var not in shared or info.annotation is not SecretStr, var
    assert "secretKeyRef" in env["VOICEAI_LIVEKIT_SIP_OUTBOUND_AUTH_PASSWORD"]["valueFrom"]
    # The patch adds to tenant_svc; it keeps what the base gives it.
    base_tenant = template(of_kind(rendered("base"), "Deployment")["tenant"])["containers"][0]
    assert set(livekit_env(base_tenant)) < set(env)
    production = of_kind(rendered("overlays/production"), "Deployment")["tenant"]
    assert tenant["startupProbe"] == template(production)["containers"][0]["startupProbe"]


def test_livekit_worker_egress_reaches_livekit_the_mesh_and_dns_only() -> None:
    livekit = yaml.safe_load((LIVEKIT_CONFIGS / "livekit.yaml").read_text())
    policies = of_kind(rendered(LIVEKIT), "NetworkPolicy")
    policy = policies["gateway-livekit"]
    assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    # In: metrics scrapes only (nothing calls the worker; it dials LiveKit).
    (ingress,) = policy["spec"]["ingress"]
    assert [p["port"] for p in ingress["ports"]] == ["metrics"]
    egress = policy["spec"]["egress"]

    def allowed(port: int | str, protocol: str) -> list[dict[str, Any]]:
        return [
            rule
            for rule in egress
            for p in rule["ports"]
            if p.get("protocol", "TCP") == protocol
            and (
                p["port"] == port
                or (
                    isinstance(port, int) == isinstance(p["port"], int)
                    and p["port"] <= port <= p.get("endPort", -1)
                )
            )
        ]

    # LiveKit's signalling/API, ICE over TCP and its whole WebRTC media range, as livekit.yaml has them.
    lk_namespace = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "livekit"}}}
    for port, protocol in (
        (livekit["port"], "TCP"),
        (livekit["rtc"]["tcp_port"], "TCP"),
        (livekit["rtc"]["port_range_start"], "UDP"),
        (livekit["rtc"]["port_range_end"], "UDP"),
    ):
        rules = allowed(port, protocol)
        assert rules and all(lk_namespace in r["to"] for r in rules), (port, protocol)
    assert allowed(53, "UDP") and allowed(53, "TCP")
    (mesh,) = allowed("grpc", "TCP")
    labels = [{"app.kubernetes.io/name": s} for s in ALLOWED_CALLERS]
    assert all(any(label_selects(peer["podSelector"], lb) for peer in mesh["to"]) for lb in labels)
    # Every egress rule is port-bound: no "anything anywhere" rule undoes the list.
    assert all(rule.get("ports") and rule.get("to") for rule in egress)


def test_livekit_overlay_scrapes_the_worker_and_uses_the_registry_image() -> None:
    docs = rendered(LIVEKIT)
    (monitor,) = of_kind(docs, "ServiceMonitor").values()
    service = of_kind(docs, "Service")["gateway-livekit"]
    assert selects(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"])
    assert [p["name"] for p in service["spec"]["ports"]] == [monitor["spec"]["endpoints"][0]["port"]]
    worker = of_kind(docs, "Deployment")["gateway-livekit"]
    assert selects(service["spec"]["selector"], worker["spec"]["template"]["metadata"]["labels"])
    assert {c["image"] for d in docs for c in containers(d)} == {
        "registry.example.com/voiceai/voiceai-mesh:0.1.0"
    }


# ---------------------------------------------------------------------------------- mTLS
@pytest.mark.parametrize("target", ["overlays/production", "overlays/production-gpu", LIVEKIT])
def test_production_runs_mtls_with_a_cert_manager_certificate_per_service(target: str) -> None:
    docs = rendered(target)
    config = of_kind(docs, "ConfigMap")["voiceai-config"]["data"]
    assert config["VOICEAI_TLS"] == "mtls"
    certificates = of_kind(docs, "Certificate")
    assert set(certificates) == set(SERVICES)
    for name, cert in certificates.items():
        spec = cert["spec"]
        # The identity the services check (common.tls.peer_identity) and the name clients verify.
        assert spec["uris"] == [f"spiffe://voiceai/{name}"] and spec["commonName"] == name
        assert name in spec["dnsNames"] and {"server auth", "client auth"} <= set(spec["usages"])
        assert spec["issuerRef"]["name"] and spec["privateKey"]["rotationPolicy"] == "Always"
    deployments = of_kind(docs, "Deployment")
    for name, doc in deployments.items():
        identity = "gateway" if name == "gateway-livekit" else name
        spec = template(doc)
        (volume,) = [v for v in spec["volumes"] if v["name"] == "tls"]
        assert volume["secret"]["secretName"] == certificates[identity]["spec"]["secretName"], name
        (c,) = spec["containers"]
        (mount,) = [m for m in c["volumeMounts"] if m["name"] == "tls"]
        # A directory mount (no subPath), so renewals reach the files the server reloads.
        assert "subPath" not in mount and "items" not in volume["secret"], name
        for key, file in (("CERT", "tls.crt"), ("KEY", "tls.key"), ("CA", "ca.crt")):
            assert config[f"VOICEAI_TLS_{key}_FILE"] == f"{mount['mountPath']}/{file}", name
        if name in SERVICES:
            for probe in ("readinessProbe", "livenessProbe"):
                assert c[probe]["grpc"]["port"] == int(config["VOICEAI_TLS_HEALTH_PORT"]), name


def test_the_base_alone_is_plaintext_only_by_saying_so() -> None:
    config = of_kind(rendered("base"), "ConfigMap")["voiceai-config"]["data"]
    assert config["VOICEAI_TLS"] == "off"


def test_gateway_runs_one_worker_per_requested_core_with_a_writable_metrics_dir() -> None:
    """``VOICEAI_WORKERS`` gateway workers = the CPU request, and the supervisor's multiprocess
    metrics directory (tempfile, under /tmp) is writable under a read-only root filesystem."""
    deployment = of_kind(rendered("base"), "Deployment")["gateway"]
    spec = template(deployment)
    (c,) = spec["containers"]
    workers = int(env_value(c, "VOICEAI_WORKERS") or 0)
    assert workers == int(c["resources"]["requests"]["cpu"]) <= int(c["resources"]["limits"]["cpu"])
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    tmp = next(m for m in c["volumeMounts"] if m["mountPath"] == "/tmp")
    assert "emptyDir" in next(v for v in spec["volumes"] if v["name"] == tmp["name"])
