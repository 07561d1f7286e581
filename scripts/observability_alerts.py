"""The alert rules of deploy/observability (one source): each with its threshold from the issue
and a runbook line. ``gen_observability.py`` writes them as a Prometheus rule file and as a
Prometheus Operator PrometheusRule; ``deploy/observability/rules.test.yaml`` unit-tests them."""

from __future__ import annotations

from typing import Any

JOBS = ("gateway", "stt", "llm", "tts", "tenant")
SERVER_FAULTS = "UNKNOWN|INTERNAL|UNAVAILABLE|DEADLINE_EXCEEDED|DATA_LOSS|UNIMPLEMENTED"

ALERTS: list[dict[str, Any]] = [
    {
        "alert": "VoiceaiHighErrorRate",
        "expr": f'sum by (job) (rate(voiceai_rpc_server_handled_total{{grpc_code=~"{SERVER_FAULTS}"}}[5m]))'
        " / sum by (job) (rate(voiceai_rpc_server_handled_total[5m])) > 0.05",
        "for": "5m",
        "labels": {"severity": "page"},
        "annotations": {
            "summary": "{{ $labels.job }}: more than 5 % of RPCs fail with a server error",
            "runbook": "Open the 'voiceai: {{ $labels.job }}' dashboard, 'Errors by method and code': UNAVAILABLE"
            " means a dependency is down (check its ready instances), INTERNAL means a bug (search the"
            " logs for 'unhandled error in'); then follow one failed call's trace by its call id.",
        },
    },
    {
        "alert": "VoiceaiSlowFirstAudio",
        "expr": "histogram_quantile(0.99, sum by (le)"
        ' (rate(voiceai_gateway_turn_stage_ms_bucket{stage="first_audio_out"}[5m]))) > 1500',
        "for": "10m",
        "labels": {"severity": "page"},
        "annotations": {
            "summary": "p99 time from the caller's speech end to the agent's first audio is over 1.5 s",
            "runbook": "Fleet dashboard, 'Turn latency by stage': the first stage that grew is the culprit"
            " (llm_first_token: LLM provider or its cap; tts_first_audio: TTS; stt_final: STT); open"
            " a slow turn's trace to see its stage spans.",
        },
    },
    {
        "alert": "VoiceaiProviderFallbackStorm",
        "expr": "sum by (service, from_provider) (rate(voiceai_provider_fallbacks_total[5m])) > 0.2",
        "for": "5m",
        "labels": {"severity": "ticket"},
        "annotations": {
            "summary": "{{ $labels.service }}: provider {{ $labels.from_provider }} keeps failing over",
            "runbook": "Check the provider's status page and key (reason label: rate_limited = raise the"
            " cap or the plan, auth = rotate the key); callers are served by the next provider meanwhile.",
        },
    },
    {
        "alert": "VoiceaiQuotaRefusalsSpike",
        "expr": 'sum by (quota) (rate(voiceai_quota_decisions_total{decision="denied"}[5m])) > 1',
        "for": "10m",
        "labels": {"severity": "ticket"},
        "annotations": {
            "summary": "More than one {{ $labels.quota }} refusal per second",
            "runbook": "Find the tenant in tenant_svc's usage (not in metrics): a tenant outgrowing its plan"
            " needs a plan change; a burst from one API key may be a runaway client.",
        },
    },
    {
        "alert": "VoiceaiNoReadyInstance",
        "expr": f'(sum by (job) (up{{job=~"{"|".join(JOBS)}"}}) == 0)'
        f' or (sum by (job) (voiceai_serving{{job=~"{"|".join(JOBS)}"}}) == 0)',
        "for": "2m",
        "labels": {"severity": "page"},
        "annotations": {
            "summary": "{{ $labels.job }} has no instance ready for new work",
            "runbook": "kubectl -n voiceai get pods -l app.kubernetes.io/name={{ $labels.job }}; describe a"
            " pod for failing probes or OOM kills; a rollout stuck draining shows in VoiceaiDrainTooLong.",
        },
    },
    {
        "alert": "VoiceaiDrainTooLong",
        "expr": "(time() - voiceai_drain_started_timestamp_seconds > 900) and voiceai_drain_started_timestamp_seconds > 0",
        "for": "1m",
        "labels": {"severity": "ticket"},
        "annotations": {
            "summary": "{{ $labels.instance }} has been draining for more than 15 minutes",
            "runbook": "Open calls keep a gateway draining up to its grace period; longer means a stream"
            " that never ends: check voiceai_rpc_server_in_flight on the instance, then delete the pod.",
        },
    },
]


def rule_groups() -> dict[str, Any]:
    """The rules in Prometheus's rule-file format."""
    return {"groups": [{"name": "voiceai", "rules": ALERTS}]}


def operator_rule() -> dict[str, Any]:
    """The same rules as a Prometheus Operator PrometheusRule."""
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": "voiceai",
            "namespace": "voiceai",
            "labels": {"app.kubernetes.io/part-of": "voiceai-mesh"},
        },
        "spec": rule_groups(),
    }
