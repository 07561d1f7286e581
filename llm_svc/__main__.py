"""``python -m llm_svc [--port N]``: the language-model service (port also from VOICEAI_PORT)."""

from common.entry import serve_main
from llm_svc.app import DEFAULT_PORT, Settings, build_ready

if __name__ == "__main__":
    serve_main("llm_svc", Settings(), DEFAULT_PORT, build_ready)  # type: ignore[arg-type]
