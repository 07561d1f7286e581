"""tenant_svc's readiness dependency: PostgreSQL answers through the service's own pool."""

from __future__ import annotations

from psycopg_pool import AsyncConnectionPool

from common.readiness import CheckDependency

POSTGRES = "postgresql"


def postgres_dependency(pool: AsyncConnectionPool, timeout_s: float = 1.0) -> CheckDependency:
    """Ready when a pooled connection runs ``SELECT 1`` (this also makes the pool reconnect
    promptly after an outage: a waiting request is what starts a fresh connection attempt)."""

    async def probe() -> None:
        async with pool.connection(timeout=timeout_s) as conn:
            await conn.execute("SELECT 1")

    return CheckDependency(POSTGRES, probe)


__all__ = ["POSTGRES", "postgres_dependency"]
