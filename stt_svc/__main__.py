"""``python -m stt_svc --port N``: the speech-to-text service."""

from common.entry import serve_main
from stt_svc.app import DEFAULT_PORT, Settings, build_ready

if __name__ == "__main__":
    serve_main("stt_svc", Settings(), DEFAULT_PORT, build_ready)  # type: ignore[arg-type]
