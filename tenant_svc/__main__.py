"""``python -m tenant_svc --port N``: tenants, agents, numbers, keys, call records (PostgreSQL)."""

from common.entry import serve_main
from tenant_svc.app import DEFAULT_PORT, Settings, build_ready

if __name__ == "__main__":
    serve_main("tenant_svc", Settings(), DEFAULT_PORT, build_ready)  # type: ignore[arg-type]
