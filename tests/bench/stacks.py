"""Summarise py-spy's collapsed stacks (``--format raw``): where the samples are.

    python -m tests.bench.stacks FILE [--top 25]

Prints the share of samples per process, the functions with the most samples on top of the
stack (self time), and those on the stack at all (inclusive), each as ``function (file)`` with
line numbers dropped so one function is one row.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter

_LINE = re.compile(r"^(?P<stack>.*) (?P<count>\d+)$")
_FRAME_LINE = re.compile(r":\d+\)$")


def _frame(text: str) -> str:
    return _FRAME_LINE.sub(")", text.strip())


def summarise(path: str, top: int = 25) -> str:
    """The report for one collapsed-stacks file."""
    own: Counter[str] = Counter()
    anywhere: Counter[str] = Counter()
    processes: Counter[str] = Counter()
    total = 0
    with open(path) as f:
        for line in f:
            m = _LINE.match(line.rstrip("\n"))
            if not m:
                continue
            count = int(m["count"])
            parts = [x for x in m["stack"].split(";") if x]
            # --subprocesses prefixes each stack with its processes: the last one was sampled.
            pids = [p.split(":", 1)[0] for p in parts if p.startswith("process ")]
            frames = [_frame(x) for x in parts if not x.startswith("process ")]
            if not frames:
                continue
            total += count
            processes[pids[-1] if pids else "process"] += count
            own[frames[-1]] += count
            for name in set(frames):
                anywhere[name] += count
    if not total:
        return f"{path}: no samples"
    split = ", ".join(f"{name} {n / total:.0%}" for name, n in processes.most_common())
    rows = [f"{path}: {total} samples ({split})", "  self (on top of the stack):"]
    rows += [f"    {n / total:6.1%}  {name}" for name, n in own.most_common(top)]
    rows.append("  inclusive (anywhere on the stack):")
    rows += [f"    {n / total:6.1%}  {name}" for name, n in anywhere.most_common(top)]
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    """Print the summary of each file given."""
    parser = argparse.ArgumentParser(prog="python -m tests.bench.stacks", description=__doc__)
    parser.add_argument("files", nargs="+")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args(argv)
    for path in args.files:
        print(summarise(path, args.top))


if __name__ == "__main__":
    main()
