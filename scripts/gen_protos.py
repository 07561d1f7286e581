"""Generate Python code for protos/ into common/gen (the only producer of that directory).

protoc emits absolute imports named after the proto paths (``from voiceai.stt.v1 import ...``);
they are rewritten to live under ``common.gen`` so the generated code is an ordinary subpackage.
Third-party protos (google/api, google/protobuf) come from installed packages at build time;
nothing third-party is committed.

Usage: python scripts/gen_protos.py [--out DIR]
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"
PACKAGE = "common.gen"
_IMPORT = re.compile(r"^(from|import) voiceai(\.| )", re.MULTILINE)


def _include_dirs() -> list[str]:
    import grpc_tools

    dirs = [str(PROTO_ROOT), str(Path(grpc_tools.__file__).parent / "_proto")]
    try:  # google/api/*.proto ship inside googleapis-common-protos
        import google.api

        dirs.append(str(Path(google.api.__path__[0]).parent.parent))
    except ImportError:  # pragma: no cover - declared dependency
        pass
    return dirs


def generate(out: Path) -> None:
    """Generate the Python code for protos/ into ``out``."""
    from grpc_tools import protoc

    protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in PROTO_ROOT.rglob("*.proto"))
    with tempfile.TemporaryDirectory() as tmp:
        args = ["protoc", *(f"-I{d}" for d in _include_dirs())]
        args += [f"--python_out={tmp}", f"--pyi_out={tmp}", f"--grpc_python_out={tmp}", *protos]
        if protoc.main(args) != 0:
            raise SystemExit("protoc failed")
        if out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True)
        (out / "__init__.py").write_text('"""Generated from protos/ by scripts/gen_protos.py."""\n')
        for src in sorted(Path(tmp).rglob("*")):
            rel = src.relative_to(tmp)
            dst = out / rel
            if src.is_dir():
                dst.mkdir(parents=True, exist_ok=True)
                (dst / "__init__.py").touch()
                continue
            text = _IMPORT.sub(lambda m: f"{m.group(1)} {PACKAGE}.voiceai{m.group(2)}", src.read_text())
            dst.write_text(text)


# The third-party protos our protos import; buf reads them from a staged copy (never committed).
THIRD_PARTY = ("annotations", "client", "field_behavior", "http", "launch_stage", "resource")


def stage_deps(dest: Path) -> None:
    """Copy google/api/*.proto from the installed googleapis-common-protos for `buf lint`."""
    import google.api

    src = Path(google.api.__path__[0])
    target = dest / "google" / "api"
    target.mkdir(parents=True, exist_ok=True)
    for name in THIRD_PARTY:
        shutil.copyfile(src / f"{name}.proto", target / f"{name}.proto")


def main() -> None:
    """The script's entry point."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=ROOT / "common" / "gen")
    parser.add_argument("--stage-deps", type=Path, help="only copy third-party protos here for buf")
    args = parser.parse_args()
    if args.stage_deps:
        stage_deps(args.stage_deps)
        return
    generate(args.out)


if __name__ == "__main__":
    sys.exit(main())
