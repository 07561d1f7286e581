"""Where tenant data lives: PostgreSQL, embedded (pgserver) unless ``DATABASE_URL`` names one.

Two roles. The *owner* (``VOICEAI_DATABASE_ADMIN_URL``, or the embedded superuser) applies the
versioned migrations and grants; the service's pool connects as the *app* role, which owns
nothing, is not a superuser and cannot bypass RLS. The service refuses to start otherwise.
"""

from __future__ import annotations

import asyncio
import logging
import re
import warnings
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql
from psycopg_pool import AsyncConnectionPool
from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from common.errors import FailedPrecondition, Unavailable

log = logging.getLogger(__name__)
# pgserver narrates every pg_ctl command at INFO; its warnings and errors still show.
logging.getLogger("pgserver").setLevel(logging.WARNING)

_MIGRATION = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


class DatabaseSettings(BaseSettings):
    """PostgreSQL connection. With no ``DATABASE_URL`` an embedded server is started."""

    # populate_by_name: code and tests pass url=/admin_url=; the environment uses the aliases.
    model_config = SettingsConfigDict(env_prefix="VOICEAI_", extra="ignore", populate_by_name=True)

    # The app role's URL (a non-owner). Empty = embedded PostgreSQL in `pg_data_dir`.
    url: SecretStr = Field(default=SecretStr(""), validation_alias=AliasChoices("DATABASE_URL"))
    # The owner's URL, used only to migrate and grant. Empty with an external DATABASE_URL means
    # the schema is managed elsewhere (migrations are then only checked, not applied).
    admin_url: SecretStr = Field(
        default=SecretStr(""), validation_alias=AliasChoices("VOICEAI_DATABASE_ADMIN_URL")
    )
    app_role: str = Field(default="voiceai_app", pattern=r"^[a-z_][a-z0-9_]{0,62}$")
    pg_data_dir: Path = Path("var/pgdata")
    pool_min_size: int = 1
    pool_max_size: int = 10
    # Seconds a request waits for a pooled connection before UNAVAILABLE.
    pool_timeout_s: float = 5.0
    connect_timeout_s: float = 5.0
    # How long the pool's background reconnect keeps backing off before it gives up and lets the
    # next request start a fresh attempt: psycopg_pool's backoff doubles without a cap (it
    # reached 16-50 s in an outage), so recovery after PostgreSQL returns is bounded by this.
    pool_reconnect_timeout_s: float = 3.0


@dataclass(frozen=True, slots=True)
class Endpoints:
    """The database URLs for the app role and for migrations."""

    app_url: str
    admin_url: str  # empty: do not migrate


def _with_user(url: str, user: str) -> str:
    parts = urlsplit(url)
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=f"{user}@{host}"))


def start_embedded(data_dir: Path, app_role: str) -> Endpoints:
    """Start (or join) the pgserver instance in ``data_dir``; several processes may share it."""
    return embedded_server(data_dir, app_role)[0]


def embedded_server(data_dir: Path, app_role: str) -> tuple[Endpoints, Any]:
    """Like ``start_embedded``, also returning the server handle (``.cleanup()`` stops it when
    this is the last process using it): the local mesh launcher owns the server this way."""
    with warnings.catch_warnings():  # platformdirs warns when XDG_RUNTIME_DIR is unset (containers)
        warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR")
        import pgserver  # heavy import, only on the embedded path

    data_dir = data_dir.expanduser().resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    # pgserver counts the processes using a data directory: the server stops when the last one
    # exits, so the local mesh's processes and a test session share one server.
    server = pgserver.get_server(data_dir, cleanup_mode="stop")
    admin = server.get_uri()
    return Endpoints(app_url=_with_user(admin, app_role), admin_url=admin), server


def endpoints(settings: DatabaseSettings) -> Endpoints:
    """The app and admin URLs the settings resolve to."""
    url = settings.url.get_secret_value()
    if not url:
        return start_embedded(settings.pg_data_dir, settings.app_role)
    return Endpoints(app_url=url, admin_url=settings.admin_url.get_secret_value())


def _migrations() -> list[tuple[int, str, str]]:
    folder = resources.files("tenant_svc.db") / "migrations"
    found = []
    for entry in folder.iterdir():
        m = _MIGRATION.match(entry.name)
        if m:
            found.append((int(m.group(1)), entry.name, entry.read_text()))
    return sorted(found)


async def migrate(admin_url: str, app_role: str) -> list[str]:
    """Apply pending migrations in order, each in its own transaction, then grant the app role.

    An advisory lock serialises concurrent starters (several replicas starting at once).
    """
    applied: list[str] = []
    async with await psycopg.AsyncConnection.connect(admin_url, autocommit=True) as conn:
        await conn.execute("SELECT pg_advisory_lock(74210001)")
        try:
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version integer PRIMARY KEY, name text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            cur = await conn.execute("SELECT version FROM schema_migrations")
            done = {row[0] for row in await cur.fetchall()}
            for version, name, text in _migrations():
                if version in done:
                    continue
                async with conn.transaction():
                    await conn.execute(text.encode())
                    await conn.execute(
                        "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)", (version, name)
                    )
                applied.append(name)
                log.info("applied migration %s", name)
            await _grant(conn, app_role)
        finally:
            await conn.execute("SELECT pg_advisory_unlock(74210001)")
    return applied


async def _grant(conn: psycopg.AsyncConnection[Any], app_role: str) -> None:
    role = sql.Identifier(app_role)
    cur = await conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (app_role,))
    if await cur.fetchone() is None:
        await conn.execute(sql.SQL("CREATE ROLE {} LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEROLE").format(role))
    await conn.execute(sql.SQL("GRANT USAGE ON SCHEMA public TO {}").format(role))
    await conn.execute(
        sql.SQL("GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {}").format(role)
    )
    await conn.execute(sql.SQL("REVOKE ALL ON schema_migrations FROM {}").format(role))
    await conn.execute(sql.SQL("GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {}").format(role))
    await conn.execute(sql.SQL("GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA public TO {}").format(role))


async def check_app_role(conn: psycopg.AsyncConnection[Any]) -> None:
    """Refuse to serve through a role that RLS would not hold (superuser, BYPASSRLS, owner)."""
    cur = await conn.execute(
        "SELECT r.rolsuper, r.rolbypassrls,"
        " EXISTS (SELECT 1 FROM pg_tables t WHERE t.schemaname = 'public'"
        "         AND t.tableowner = current_user AND t.tablename <> 'schema_migrations')"
        " FROM pg_roles r WHERE r.rolname = current_user"
    )
    row = await cur.fetchone()
    if row is None or any(row):
        raise FailedPrecondition(
            "the database role in DATABASE_URL must be a non-owner without SUPERUSER or BYPASSRLS,"
            " so that row-level security isolates tenants; use a dedicated app role"
        )
    cur = await conn.execute(
        "SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND tablename = 'tenants'"
    )
    found = await cur.fetchone()
    if not found or found[0] == 0:
        raise FailedPrecondition("the tenancy schema is missing: set VOICEAI_DATABASE_ADMIN_URL to migrate")


async def _configure(conn: psycopg.AsyncConnection[Any]) -> None:
    # Belt and braces: the app role's sessions never start with a tenant or platform flag.
    await conn.execute(
        "SELECT set_config('voiceai.tenant_id', '', false), set_config('voiceai.platform', '', false)"
    )
    await conn.commit()


async def open_pool(settings: DatabaseSettings) -> AsyncConnectionPool:
    """Migrate (when an owner URL is known), then open the app role's pool and check it."""
    ends = await asyncio.to_thread(endpoints, settings)
    if ends.admin_url:
        await migrate(ends.admin_url, settings.app_role)
    pool = AsyncConnectionPool(
        ends.app_url,
        min_size=settings.pool_min_size,
        max_size=settings.pool_max_size,
        timeout=settings.pool_timeout_s,
        kwargs={"connect_timeout": max(1, int(settings.connect_timeout_s))},
        configure=_configure,
        # A pooled connection is checked before it is handed out: one that died with the server
        # is replaced instead of failing the request.
        check=AsyncConnectionPool.check_connection,
        reconnect_timeout=settings.pool_reconnect_timeout_s,
        open=False,
        name="tenant_svc",
    )
    try:
        await pool.open(wait=True, timeout=settings.connect_timeout_s * 2)
    except Exception as e:
        await pool.close()
        raise Unavailable("cannot reach PostgreSQL: check DATABASE_URL and that the server is up") from e
    try:
        async with pool.connection() as conn:
            await check_app_role(conn)
    except BaseException:
        await pool.close()
        raise
    return pool
