"""``python -m common.crypto init-kek PATH`` (dev key ring) and ``rotate-kek PATH`` (add a KEK)."""

from __future__ import annotations

import argparse
from pathlib import Path

from common.crypto.kek import create_key_ring


def main() -> None:
    """Create or rotate a local key ring file."""
    parser = argparse.ArgumentParser(prog="python -m common.crypto")
    parser.add_argument("command", choices=["init-kek", "rotate-kek"])
    parser.add_argument("path", type=Path)
    args = parser.parse_args()
    kek_id = create_key_ring(args.path, rotate=args.command == "rotate-kek")
    print(f"{args.path}: current KEK {kek_id}")


if __name__ == "__main__":
    main()
