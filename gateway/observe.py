"""``python -m gateway.observe`` (``make observe``): the local mesh with a real Prometheus beside it.

Every mesh process serves /metrics on its gRPC port + ``--metrics-offset``; a Prometheus (the
Debian ``prometheus`` package) scrapes them all with the shipped alert rules loaded
(deploy/observability/rules.yaml) and answers on http://127.0.0.1:9090 (graph, alerts, the
dashboards' queries). Traces go to ``var/traces/<service>.jsonl`` (one span per line), or to
your OTLP receiver when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set; ``python -m gateway.trace_view``
prints each call's span tree from the files. Ctrl-C stops the mesh and Prometheus.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "deploy" / "observability" / "rules.yaml"
# Scrape job names = the Kubernetes Service names, which the dashboards and alerts use.
JOB_OFFSETS = {"gateway": 0, "stt": 1, "llm": 2, "tts": 3, "tenant": 4}


def prometheus_config(targets: dict[str, str], rules: Path = RULES, interval: str = "5s") -> str:
    """A Prometheus config scraping ``targets`` (job -> host:port of its /metrics) with ``rules``."""
    config = {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "rule_files": [str(rules)],
        "scrape_configs": [
            {"job_name": job, "static_configs": [{"targets": [address]}]} for job, address in targets.items()
        ],
    }
    return yaml.safe_dump(config, sort_keys=False)


def start_prometheus(config: str, data_dir: Path, listen: str) -> subprocess.Popen[bytes] | None:
    """Start ``prometheus`` with ``config`` (written under ``data_dir``); None when it is not
    installed (the reason is printed)."""
    binary = shutil.which("prometheus")
    if binary is None:
        print(
            "  prometheus is not installed (Debian: apt-get install prometheus); metrics are still on"
            " each process's /metrics",
            file=sys.stderr,
        )
        return None
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / "prometheus.yml"
    path.write_text(config)
    return subprocess.Popen(
        [
            binary,
            f"--config.file={path}",
            f"--storage.tsdb.path={data_dir / 'tsdb'}",
            f"--web.listen-address={listen}",
            "--log.level=warn",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def main(argv: list[str] | None = None) -> int:
    """Start Prometheus, then the mesh in the foreground (gateway.mesh's flags pass through)."""
    parser = argparse.ArgumentParser(prog="python -m gateway.observe", description=__doc__)
    parser.add_argument("--base-port", type=int, default=50060, help="the mesh's gateway port")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--metrics-offset", type=int, default=100, help="/metrics port = gRPC port + this")
    parser.add_argument("--prometheus", default="127.0.0.1:9090", help="where Prometheus listens")
    parser.add_argument("--state-dir", default="var", help="traces, Prometheus data, the mesh's state")
    args, mesh_args = parser.parse_known_args(argv)
    state = Path(args.state_dir)
    targets = {
        job: f"{args.host}:{args.base_port + offset + args.metrics_offset}"
        for job, offset in JOB_OFFSETS.items()
    }
    os.environ["VOICEAI_METRICS_PORT_OFFSET"] = str(args.metrics_offset)
    if not (os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get("OTEL_TRACES_EXPORTER")):
        os.environ.setdefault("VOICEAI_TRACE_FILE", str((state / "traces" / "{service}.jsonl").resolve()))
    prometheus = start_prometheus(prometheus_config(targets), state / "prometheus", args.prometheus)
    print("\n  observability:")
    if prometheus is not None:
        print(
            f"    Prometheus   http://{args.prometheus}  (alerts: /alerts; rules from {RULES.relative_to(ROOT)})"
        )
    print(f"    metrics      {', '.join(f'{job} http://{t}/metrics' for job, t in targets.items())}")
    trace_file = os.environ.get("VOICEAI_TRACE_FILE")
    if trace_file:
        print(f"    traces       {trace_file}  (python -m gateway.trace_view {Path(trace_file).parent})")
    else:
        print(
            f"    traces       OTLP to {os.environ.get('OTEL_EXPORTER_OTLP_ENDPOINT', '(OTEL_TRACES_EXPORTER)')}"
        )
    print("    dashboards   deploy/observability/dashboards/*.json (import into Grafana)\n", flush=True)
    from gateway import mesh

    try:
        return mesh.main(
            ["--base-port", str(args.base_port), "--host", args.host, "--state-dir", str(state), *mesh_args]
        )
    finally:
        if prometheus is not None:
            prometheus.terminate()
            try:
                prometheus.wait(10)
            except subprocess.TimeoutExpired:
                prometheus.kill()
                prometheus.wait()


if __name__ == "__main__":
    sys.exit(main())
