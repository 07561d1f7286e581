"""``python -m gateway.trace_view DIR [--call ID]``: each call's span tree from trace files.

Reads the one-span-per-line files the mesh writes with ``VOICEAI_TRACE_FILE`` (``make observe``:
``var/traces/*.jsonl``), groups spans by trace, and prints every trace that holds a call as a
tree: offset from the call's start, duration, service, name, and the attributes that say where
a turn's time went. A person without a tracing backend can read a call's trace with it.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from datetime import datetime
from pathlib import Path
from typing import Any

_SHOWN = (
    "voiceai.call_id",
    "voiceai.ingress",
    "voiceai.turn",
    "voiceai.interrupted",
    "voiceai.llm.engine",
    "voiceai.llm.completion_tokens",
    "voiceai.end_reason",
    "db.operation",
)


def _ms(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() * 1000.0


def load(directory: Path) -> dict[str, list[dict[str, Any]]]:
    """Spans by trace id, each tagged with the service (file) it came from."""
    traces: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for path in sorted(directory.glob("*.jsonl")):
        for line in path.read_text().splitlines():
            if line.strip():
                span = json.loads(line)
                span["_service"] = path.stem
                traces[span["context"]["trace_id"]].append(span)
    return traces


def render(spans: list[dict[str, Any]]) -> list[str]:
    """One trace as indented lines, children in start order."""
    by_id = {s["context"]["span_id"]: s for s in spans}
    children: dict[str | None, list[dict[str, Any]]] = defaultdict(list)
    for span in spans:
        parent = span.get("parent_id")
        children[parent if parent in by_id else None].append(span)
    start = min(_ms(s["start_time"]) for s in spans)
    lines: list[str] = []

    def walk(span: dict[str, Any], depth: int) -> None:
        begin, end = _ms(span["start_time"]), _ms(span["end_time"])
        attrs = span.get("attributes", {})
        shown = " ".join(f"{k.split('.')[-1]}={attrs[k]}" for k in _SHOWN if k in attrs)
        events = ",".join(e["name"].removeprefix("voiceai.") for e in span.get("events", []))
        status = " ERROR" if span["status"]["status_code"] == "ERROR" else ""
        lines.append(
            f"{begin - start:9.1f} ms {end - begin:9.1f} ms  {'  ' * depth}{span['_service']}: {span['name']}"
            f"{status}{'  ' + shown if shown else ''}{'  [' + events + ']' if events else ''}"
        )
        for child in sorted(children[span["context"]["span_id"]], key=lambda s: _ms(s["start_time"])):
            walk(child, depth + 1)

    for root in sorted(children[None], key=lambda s: _ms(s["start_time"])):
        walk(root, 0)
    return lines


def main(argv: list[str] | None = None) -> int:
    """Print the calls found in DIR."""
    parser = argparse.ArgumentParser(prog="python -m gateway.trace_view", description=__doc__)
    parser.add_argument("directory", nargs="?", default="var/traces")
    parser.add_argument("--call", default="", help="only the call with this id")
    args = parser.parse_args(argv)
    shown = 0
    for trace_id, spans in load(Path(args.directory)).items():
        calls = [s for s in spans if s["name"] == "gateway.call"]
        if not calls or (args.call and calls[0]["attributes"].get("voiceai.call_id") != args.call):
            continue
        print(f"trace {trace_id}")
        print("\n".join(render(spans)), end="\n\n")
        shown += 1
    if not shown:
        print(f"no call traces in {args.directory}", file=sys.stderr)
    return 0 if shown else 1


if __name__ == "__main__":
    sys.exit(main())
