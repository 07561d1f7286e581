"""Dashboards and alert rules as code: one source for everything under deploy/observability/
(the panels here, the alert rules in ``observability_alerts.py`` beside this file).

``python scripts/gen_observability.py`` writes
- ``deploy/observability/dashboards/*.json``: Grafana dashboards built with grafana-foundation-sdk
  (a fleet overview and one page per service);
- ``deploy/observability/rules.yaml``: the Prometheus alert rules (what ``promtool`` checks and
  ``make observe`` loads);
- ``deploy/components/servicemonitor/prometheusrule.yaml``: the same rules as a Prometheus
  Operator ``PrometheusRule``.
``--check`` fails when a committed file differs from what this script writes
(``tests/unit/test_observability.py`` runs it).

Queries use fixed ``[5m]`` windows, not Grafana variables, so a test can run each one as is
against a real Prometheus (``tests/integration/test_prometheus_scrape.py``). ``job`` is the
Kubernetes Service name (``gateway``, ``stt``, ``llm``, ``tts``, ``tenant``), which is also what
``make observe`` names its scrape jobs.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "deploy" / "observability"
OPERATOR_RULE = ROOT / "deploy" / "components" / "servicemonitor" / "prometheusrule.yaml"
sys.path.insert(0, str(Path(__file__).resolve().parent))  # the alerts module beside this one
from observability_alerts import ALERTS, JOBS, operator_rule, rule_groups  # noqa: E402

__all__ = ["ALERTS", "JOBS", "dashboards", "main", "operator_rule", "outputs", "rule_groups"]


@dataclass(frozen=True)
class Query:
    """One panel query; ``always`` = it has data on any mesh that took a call (the others count
    events, such as fallbacks, that a healthy call may never produce); ``exported_by`` names
    the module defining its metric when the local mesh does not run it (the LiveKit worker)."""

    expr: str
    legend: str
    always: bool = True
    exported_by: str = ""


@dataclass(frozen=True)
class PanelSpec:
    """A time series panel: title, unit, queries."""

    title: str
    unit: str
    queries: tuple[Query, ...]


def _q(expr: str, legend: str, always: bool = True) -> Query:
    return Query(expr, legend, always)


def _stage_quantiles() -> tuple[Query, ...]:
    return tuple(
        _q(
            f"histogram_quantile({q}, sum by (le, stage) (rate(voiceai_gateway_turn_stage_ms_bucket[5m])))",
            f"p{int(q * 100)} {{{{stage}}}}",
        )
        for q in (0.5, 0.95, 0.99)
    )


FLEET: tuple[PanelSpec, ...] = (
    PanelSpec(
        "Active calls",
        "short",
        (
            _q("sum(voiceai_gateway_active_calls)", "Converse calls"),
            Query(
                "sum(voiceai_livekit_active_calls)",
                "LiveKit calls",
                always=False,
                exported_by="gateway.livekit.calls",
            ),
        ),
    ),
    PanelSpec("Turn latency by stage (p50 / p95 / p99)", "ms", _stage_quantiles()),
    PanelSpec(
        "Requests by service",
        "reqps",
        (_q("sum by (job) (rate(voiceai_rpc_server_handled_total[5m]))", "{{job}}"),),
    ),
    PanelSpec(
        "Errors by service and code",
        "reqps",
        (
            _q(
                'sum by (job, grpc_code) (rate(voiceai_rpc_server_handled_total{grpc_code!="OK"}[5m]))',
                "{{job}} {{grpc_code}}",
                always=False,
            ),
        ),
    ),
    PanelSpec(
        "Provider fallbacks and instance failovers",
        "ops",
        (
            _q(
                "sum by (service, from_provider, to_provider) (rate(voiceai_provider_fallbacks_total[5m]))",
                "{{service}} {{from_provider}} -> {{to_provider}}",
                always=False,
            ),
            _q(
                "sum by (service) (rate(voiceai_gateway_failovers_total[5m]))",
                "failover {{service}}",
                always=False,
            ),
        ),
    ),
    PanelSpec(
        "Quota refusals",
        "ops",
        (
            _q(
                'sum by (quota, tier) (rate(voiceai_quota_decisions_total{decision="denied"}[5m]))',
                "{{quota}} {{tier}}",
                always=False,
            ),
        ),
    ),
    PanelSpec(
        "Provider caps in use",
        "percentunit",
        (
            _q(
                "sum by (service, provider) (voiceai_provider_streams_in_use)"
                " / sum by (service, provider) (voiceai_provider_stream_capacity)",
                "{{service}} {{provider}}",
                always=False,
            ),
        ),
    ),
    PanelSpec(
        "Barge-ins",
        "ops",
        (_q("sum by (kind) (rate(voiceai_gateway_interruptions_total[5m]))", "{{kind}}", always=False),),
    ),
    PanelSpec(
        "Ready instances",
        "short",
        (_q("sum by (job) (voiceai_serving)", "{{job}}"),),
    ),
)


def _service_panels(job: str) -> tuple[PanelSpec, ...]:
    sel = f'job="{job}"'
    red = (
        PanelSpec(
            "Requests by method",
            "reqps",
            (
                _q(
                    f"sum by (grpc_method) (rate(voiceai_rpc_server_handled_total{{{sel}}}[5m]))",
                    "{{grpc_method}}",
                ),
            ),
        ),
        PanelSpec(
            "Errors by method and code",
            "reqps",
            (
                _q(
                    f'sum by (grpc_method, grpc_code) (rate(voiceai_rpc_server_handled_total{{{sel},grpc_code!="OK"}}[5m]))',
                    "{{grpc_method}} {{grpc_code}}",
                    always=False,
                ),
            ),
        ),
        PanelSpec(
            "Latency p99 by method (streams: lifetime)",
            "s",
            (
                _q(
                    "histogram_quantile(0.99, sum by (le, grpc_method)"
                    f" (rate(voiceai_rpc_server_handling_seconds_bucket{{{sel}}}[5m])))",
                    "{{grpc_method}}",
                ),
            ),
        ),
        PanelSpec(
            "In-flight RPCs and streams",
            "short",
            (_q(f"sum by (grpc_method) (voiceai_rpc_server_in_flight{{{sel}}})", "{{grpc_method}}"),),
        ),
    )
    first = PanelSpec(
        "Time to first response p95 (server streams)",
        "s",
        (
            _q(
                "histogram_quantile(0.95, sum by (le, grpc_method)"
                f" (rate(voiceai_rpc_server_first_response_seconds_bucket{{{sel}}}[5m])))",
                "{{grpc_method}}",
            ),
        ),
    )
    engines: dict[str, tuple[PanelSpec, ...]] = {
        "stt": (
            PanelSpec(
                "Audio in and finals",
                "short",
                (
                    _q(
                        f"sum by (engine) (rate(voiceai_stt_audio_seconds_total{{{sel}}}[5m]))",
                        "audio s/s {{engine}}",
                    ),
                    _q(
                        f"sum by (engine) (rate(voiceai_stt_finals_total{{{sel}}}[5m]))",
                        "finals/s {{engine}}",
                    ),
                ),
            ),
            PanelSpec(
                "Final latency p95",
                "s",
                (
                    _q(
                        "histogram_quantile(0.95, sum by (le, engine)"
                        f" (rate(voiceai_stt_final_latency_seconds_bucket{{{sel}}}[5m])))",
                        "{{engine}}",
                    ),
                ),
            ),
        ),
        "llm": (
            PanelSpec(
                "Tokens",
                "short",
                (
                    _q(
                        f"sum by (engine, direction) (rate(voiceai_llm_tokens_total{{{sel}}}[5m]))",
                        "{{engine}} {{direction}}",
                    ),
                ),
            ),
            PanelSpec(
                "First token p95",
                "s",
                (
                    _q(
                        "histogram_quantile(0.95, sum by (le, engine)"
                        f" (rate(voiceai_llm_first_token_seconds_bucket{{{sel}}}[5m])))",
                        "{{engine}}",
                    ),
                ),
            ),
        ),
        "tts": (
            PanelSpec(
                "Characters",
                "short",
                (_q(f"sum by (engine) (rate(voiceai_tts_characters_total{{{sel}}}[5m]))", "{{engine}}"),),
            ),
            PanelSpec(
                "First audio p95",
                "s",
                (
                    _q(
                        "histogram_quantile(0.95, sum by (le, engine)"
                        f" (rate(voiceai_tts_first_audio_seconds_bucket{{{sel}}}[5m])))",
                        "{{engine}}",
                    ),
                ),
            ),
        ),
        "tenant": (
            PanelSpec(
                "SQL p99 by statement",
                "s",
                (
                    _q(
                        "histogram_quantile(0.99, sum by (le, operation)"
                        f' (rate(voiceai_store_operation_seconds_bucket{{{sel},store="postgresql"}}[5m])))',
                        "{{operation}}",
                    ),
                ),
            ),
            PanelSpec(
                "Connection pool",
                "short",
                (
                    _q(f"sum(voiceai_db_pool_connections{{{sel}}})", "connections"),
                    _q(f"sum(voiceai_db_pool_idle_connections{{{sel}}})", "idle"),
                    _q(f"sum(voiceai_db_pool_waiting_requests{{{sel}}})", "waiting"),
                ),
            ),
        ),
        "gateway": (
            PanelSpec(
                "Redis on the admission path p99",
                "s",
                (
                    _q(
                        "histogram_quantile(0.99, sum by (le, operation)"
                        f' (rate(voiceai_store_operation_seconds_bucket{{{sel},store="redis"}}[5m])))',
                        "{{operation}}",
                        always=False,  # only with tenancy and quotas configured
                    ),
                ),
            ),
            PanelSpec(
                "Calls ended by reason",
                "ops",
                (_q(f"sum by (reason) (rate(voiceai_gateway_calls_total{{{sel}}}[5m]))", "{{reason}}"),),
            ),
        ),
    }
    return red + ((first,) if job != "tenant" else ()) + engines[job]


def dashboards() -> dict[str, tuple[str, tuple[PanelSpec, ...]]]:
    """uid -> (title, panels)."""
    out = {"voiceai-fleet": ("voiceai: fleet overview", FLEET)}
    for job in JOBS:
        out[f"voiceai-{job}"] = (f"voiceai: {job}", _service_panels(job))
    return out


def build_dashboard(uid: str, title: str, panels: tuple[PanelSpec, ...]) -> dict[str, Any]:
    """One dashboard as Grafana JSON, built with grafana-foundation-sdk."""
    from grafana_foundation_sdk.builders.dashboard import Dashboard
    from grafana_foundation_sdk.builders.prometheus import Dataquery
    from grafana_foundation_sdk.builders.timeseries import Panel
    from grafana_foundation_sdk.cog.encoder import JSONEncoder

    builder = Dashboard(title).uid(uid).tags(["voiceai", "generated"]).refresh("30s").time("now-1h", "now")
    for spec in panels:
        panel = Panel().title(spec.title).unit(spec.unit).height(8).span(12)
        for ref, query in zip("ABCDEFGH", spec.queries, strict=False):
            panel = panel.with_target(Dataquery().expr(query.expr).legend_format(query.legend).ref_id(ref))
        builder = builder.with_panel(panel)
    encoded: dict[str, Any] = json.loads(JSONEncoder(sort_keys=True, indent=2).encode(builder.build()))
    return encoded


HEADER = "# Generated by scripts/gen_observability.py: edit that, then run it.\n"


def outputs() -> dict[Path, str]:
    """Every file this script writes, with its content."""
    files: dict[Path, str] = {}
    for uid, (title, panels) in dashboards().items():
        files[OUT / "dashboards" / f"{uid}.json"] = (
            json.dumps(build_dashboard(uid, title, panels), indent=2, sort_keys=True) + "\n"
        )
    dump = {"sort_keys": False, "width": 110, "allow_unicode": True}
    files[OUT / "rules.yaml"] = HEADER + yaml.safe_dump(rule_groups(), **dump)  # type: ignore[arg-type]
    files[OPERATOR_RULE] = HEADER + yaml.safe_dump(operator_rule(), **dump)  # type: ignore[arg-type]
    return files


def main(argv: list[str] | None = None) -> int:
    """Write (or with --check, compare) the generated files."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--check", action="store_true", help="fail if a committed file is stale")
    args = parser.parse_args(argv)
    stale = []
    for path, text in outputs().items():
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(str(path.relative_to(ROOT)))
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    if stale:
        print("stale (run python scripts/gen_observability.py):", *stale, sep="\n  ", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
