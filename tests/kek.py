"""One local key ring (KEK) for the whole test session and every process it starts, through
VOICEAI_KEK_FILE (tenant_svc refuses to start without one)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from common.crypto import create_key_ring

if not os.environ.get("VOICEAI_KEK_FILE") and os.environ.get("VOICEAI_KEK_PROVIDER", "local") == "local":
    os.environ["VOICEAI_KEK_FILE"] = str(Path(tempfile.mkdtemp(prefix="voiceai-kek-")) / "kek.json")
    create_key_ring(Path(os.environ["VOICEAI_KEK_FILE"]))
KEK_FILE = Path(os.environ.get("VOICEAI_KEK_FILE", ""))
