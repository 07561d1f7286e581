"""``python -m llm_svc --port N``: the language-model service."""

from common.entry import serve_main
from llm_svc.app import DEFAULT_PORT, Settings, build_host


async def _build(settings: Settings):  # type: ignore[no-untyped-def]
    return build_host(settings)


if __name__ == "__main__":
    serve_main("llm_svc", Settings(), DEFAULT_PORT, _build)  # type: ignore[arg-type]
