"""Dashboards and alerts as code: generated files current, rules valid, every alert unit-tested
with promtool (a case that fires it and one that does not), every alert with a runbook line."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "observability" / "rules.yaml"
RULE_TESTS = ROOT / "deploy" / "observability" / "rules.test.yaml"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None,
    reason="promtool not installed (Debian package 'prometheus'; .ci/run installs it as root)",
)


def generator() -> ModuleType:
    """scripts/gen_observability.py, imported by path (scripts/ is not a package)."""
    spec = importlib.util.spec_from_file_location(
        "gen_observability", ROOT / "scripts" / "gen_observability.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def test_generated_dashboards_and_rules_are_current() -> None:
    assert generator().main(["--check"]) == 0, "run: python scripts/gen_observability.py"


def test_every_alert_has_a_runbook_and_the_operator_rule_matches() -> None:
    gen = generator()
    rules = yaml.safe_load(RULES.read_text())["groups"][0]["rules"]
    assert {r["alert"] for r in rules} == {
        "VoiceaiHighErrorRate",
        "VoiceaiSlowFirstAudio",
        "VoiceaiProviderFallbackStorm",
        "VoiceaiQuotaRefusalsSpike",
        "VoiceaiNoReadyInstance",
        "VoiceaiDrainTooLong",
    }
    assert all(len(r["annotations"]["runbook"]) > 40 for r in rules)
    operator = yaml.safe_load(gen.OPERATOR_RULE.read_text())
    assert operator["kind"] == "PrometheusRule" and operator["spec"] == yaml.safe_load(RULES.read_text())


def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    cases = [c for t in yaml.safe_load(RULE_TESTS.read_text())["tests"] for c in t.get("alert_rule_test", [])]
    for rule in yaml.safe_load(RULES.read_text())["groups"][0]["rules"]:
        mine = [c for c in cases if c["alertname"] == rule["alert"]]
        assert any(c["exp_alerts"] for c in mine), f"{rule['alert']}: no case fires it"
        assert any(not c["exp_alerts"] for c in mine), f"{rule['alert']}: no case where it stays quiet"


@needs_promtool
def test_promtool_checks_the_rules() -> None:
    done = subprocess.run(
        [PROMTOOL, "check", "rules", str(RULES)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 6 rules found" in done.stdout


@needs_promtool
def test_promtool_unit_tests_pass() -> None:
    done = subprocess.run(
        [PROMTOOL, "test", "rules", RULE_TESTS.name],
        cwd=RULE_TESTS.parent,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


@needs_promtool
def test_promtool_unit_tests_catch_a_wrong_threshold(tmp_path: Path) -> None:
    """The unit tests can fail: with the error-rate threshold at 50 % the firing case fails."""
    shutil.copy(RULE_TESTS, tmp_path / RULE_TESTS.name)
    (tmp_path / RULES.name).write_text(RULES.read_text().replace("> 0.05", "> 0.5"))
    done = subprocess.run(
        [PROMTOOL, "test", "rules", RULE_TESTS.name],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode != 0 and "VoiceaiHighErrorRate" in done.stdout + done.stderr


def test_dashboards_cover_the_fleet_and_every_service() -> None:
    gen = generator()
    boards = gen.dashboards()
    assert set(boards) == {"voiceai-fleet", *(f"voiceai-{job}" for job in gen.JOBS)}
    fleet_titles = {p.title for p in boards["voiceai-fleet"][1]}
    for wanted in ("Active calls", "Turn latency by stage", "Errors by service and code", "Quota refusals"):
        assert any(t.startswith(wanted) for t in fleet_titles), wanted
    # Bounded labels only: no panel groups by a tenant or a call.
    for _title, panels in boards.values():
        for panel in panels:
            for query in panel.queries:
                assert "tenant_id" not in query.expr and "call_id" not in query.expr


def test_metrics_of_processes_outside_the_local_mesh_exist_there() -> None:
    """A query whose metric the local mesh cannot export names the module defining it."""
    import importlib

    from prometheus_client import REGISTRY

    gen = generator()
    for _title, panels in gen.dashboards().values():
        for query in (q for p in panels for q in p.queries if q.exported_by):
            importlib.import_module(
                f"{query.exported_by}.calls" if query.exported_by == "gateway.livekit" else query.exported_by
            )
            names = {m.name for m in REGISTRY.collect()}
            metric = query.expr.split("(")[-1].rstrip(")")
            assert metric in names, (query.expr, query.exported_by)
