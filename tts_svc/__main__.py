"""``python -m tts_svc --port N``: the text-to-speech service."""

from common.entry import serve_main
from tts_svc.app import DEFAULT_PORT, Settings, build_ready

if __name__ == "__main__":
    serve_main("tts_svc", Settings(), DEFAULT_PORT, build_ready)  # type: ignore[arg-type]
