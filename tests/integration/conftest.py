"""Integration fixtures: a real PostgreSQL (embedded pgserver, or DATABASE_URL) for tenant data."""

from __future__ import annotations

import os
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from psycopg_pool import AsyncConnectionPool

from tenant_svc.db.database import DatabaseSettings, open_pool


@pytest.fixture(scope="session")
def database_settings() -> DatabaseSettings:
    """DATABASE_URL (app role) + VOICEAI_DATABASE_ADMIN_URL (owner) when set, else embedded."""
    if os.environ.get("DATABASE_URL"):
        return DatabaseSettings()
    # Not under pytest's 0700 tmp root: as root, pgserver runs PostgreSQL as its own user, which
    # must be able to reach the data directory to stop the server cleanly.
    return DatabaseSettings(url="", pg_data_dir=Path(tempfile.mkdtemp(prefix="voiceai-test-pg-")) / "data")


@pytest.fixture(scope="session")
async def pg_pool(database_settings: DatabaseSettings) -> AsyncIterator[AsyncConnectionPool]:
    pool = await open_pool(database_settings)
    try:
        yield pool
    finally:
        await pool.close()
