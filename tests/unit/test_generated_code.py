"""The committed generated code is exactly what `make proto` produces from protos/."""

from __future__ import annotations

import filecmp
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_generated_code_is_current(tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import gen_protos
    finally:
        sys.path.pop(0)
    out = tmp_path / "gen"
    gen_protos.generate(out)
    committed = ROOT / "common" / "gen"
    fresh = {p.relative_to(out) for p in out.rglob("*") if p.is_file()}
    have = {
        p.relative_to(committed) for p in committed.rglob("*") if p.is_file() and "__pycache__" not in p.parts
    }
    assert fresh == have, f"generated files differ ({sorted(fresh ^ have)}): run `make proto`"
    stale = [str(p) for p in sorted(fresh) if not filecmp.cmp(out / p, committed / p, shallow=False)]
    assert not stale, f"stale generated code {stale}: run `make proto` and commit common/gen"
