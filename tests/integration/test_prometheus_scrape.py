"""A real Prometheus scrapes a running mesh (``python -m gateway.mesh``, zero-cost engines) with
the shipped rules loaded, after a call: every dashboard query is valid PromQL, refers only to
metrics the processes export, and the ones that describe any call return data."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import signal
import socket
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gateway.cli import CallOptions, Utterance, place_call
from gateway.observe import JOB_OFFSETS, prometheus_config, start_prometheus
from tests.credentials import bearer
from tests.integration.test_cli_mesh import launcher, read_until
from tests.unit.test_observability import generator

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        shutil.which("prometheus") is None,
        reason="prometheus not installed (Debian package 'prometheus'; .ci/run installs it as root)",
    ),
]

OFFSET = 1000  # /metrics = gRPC port + 1000 (the launcher's ports are ephemeral, below 61000)
TONE = (6000 * np.sin(2 * np.pi * 300 * np.arange(8000) / 16000)).astype("<i2").tobytes()
_SUFFIXES = re.compile(r"_(bucket|count|sum|total|created)$")
_METRIC = re.compile(r"\b(voiceai_[a-z0-9_]+|up)\b")


def _get(url: str) -> Any:
    """JSON for Prometheus's API, text for a /metrics page."""
    with urllib.request.urlopen(url, timeout=10) as resp:
        body = resp.read().decode()
    return json.loads(body) if "/api/" in url else body


def _query(prom: str, expr: str) -> list[Any]:
    out = _get(f"http://{prom}/api/v1/query?{urllib.parse.urlencode({'query': expr})}")
    assert out["status"] == "success", (expr, out)
    return list(out["data"]["result"])


def _families(text: str) -> set[str]:
    return {_SUFFIXES.sub("", line.split()[2]) for line in text.splitlines() if line.startswith("# TYPE ")}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_prometheus_scrapes_the_mesh_and_every_dashboard_query_works(tmp_path: Path) -> None:
    gen = generator()
    env = {"VOICEAI_METRICS_PORT_OFFSET": str(OFFSET)}
    with launcher(env=env) as (proc, (gw, stt, llm, tts)):
        banner = read_until(proc, "Ctrl-C stops the mesh")
        tenant = int(re.findall(r"tenant_svc\s+127\.0\.0\.1:(\d+)", banner)[0])
        ports = {"gateway": gw, "stt": stt, "llm": llm, "tts": tts, "tenant": tenant}
        assert set(ports) == set(JOB_OFFSETS)
        targets = {job: f"127.0.0.1:{port + OFFSET}" for job, port in ports.items()}
        prom = f"127.0.0.1:{_free_port()}"
        prometheus = start_prometheus(prometheus_config(targets, interval="1s"), tmp_path / "prom", prom)
        assert prometheus is not None
        try:
            report = await place_call(
                CallOptions(
                    gateway=f"127.0.0.1:{gw}",
                    utterances=[Utterance(pcm=TONE), Utterance(pcm=TONE)],
                    pause_ms=200,
                    authorization=bearer("demo")[1],
                )
            )
            assert report.ok, (report.error, report.notes)
            exported = set().union(*(_families(_get(f"http://{t}/metrics")) for t in targets.values()))
            # Every target up, the rules loaded and healthy.
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                up = _query(prom, "up")
                if len(up) == 5 and all(r["value"][1] == "1" for r in up):
                    break
                await asyncio.sleep(0.5)
            assert {r["metric"]["job"] for r in _query(prom, "up == 1")} == set(JOB_OFFSETS)
            rules = _get(f"http://{prom}/api/v1/rules")["data"]["groups"][0]["rules"]
            assert len(rules) == 6 and all(r["health"] == "ok" for r in rules), rules
            await asyncio.sleep(3)  # a few scrapes after the call, so rate() has two points of it

            missing, empty = [], []
            for uid, (_title, panels) in gen.dashboards().items():
                for panel in panels:
                    for query in panel.queries:
                        names = {_SUFFIXES.sub("", n) for n in _METRIC.findall(query.expr)} - {"up"}
                        gone = [n for n in names if n not in exported and not query.exported_by]
                        if gone:
                            missing.append((uid, panel.title, gone))
                        result = _query(prom, query.expr)
                        if query.always and not result:
                            empty.append((uid, panel.title, query.expr))
            assert missing == [], f"panels refer to metrics no process exports: {missing}"
            assert empty == [], f"panels without data after a call: {empty}"
            for alert in gen.ALERTS:  # valid on the real server too
                _query(prom, alert["expr"])
        finally:
            prometheus.terminate()
            prometheus.wait(10)
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)
