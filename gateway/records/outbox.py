"""A bounded on-disk outbox of call-record snapshots, one SQLite file per gateway process.

Each call has one row: its latest snapshot (serialized ``Call``), the revision it carries and the
revision tenant_svc has acknowledged. A row leaves the outbox only once its call's final snapshot
was acknowledged; a live call's row stays (already sent) so that, if the process dies, the next
start finds it and records the call as interrupted with the turns it had. WAL mode with
``synchronous=NORMAL``: a committed put survives the process being killed.

All SQLite work runs on one dedicated thread (the connection belongs to it): nothing here blocks
the event loop. An exclusive ``flock`` keeps a second process off the same file.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TypeVar

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    tenant_id     TEXT NOT NULL,
    call_id       TEXT NOT NULL,
    revision      INTEGER NOT NULL,
    sent_revision INTEGER NOT NULL DEFAULT 0,
    final         INTEGER NOT NULL,
    payload       BLOB NOT NULL,
    attempts      INTEGER NOT NULL DEFAULT 0,
    next_attempt  REAL NOT NULL DEFAULT 0,
    parked        TEXT NOT NULL DEFAULT '',
    update_time   REAL NOT NULL,
    PRIMARY KEY (tenant_id, call_id)
)
"""
_PUT = """
INSERT INTO records (tenant_id, call_id, revision, final, payload, update_time)
VALUES (?, ?, ?, ?, ?, ?)
ON CONFLICT (tenant_id, call_id) DO UPDATE SET
    revision = excluded.revision, final = excluded.final, payload = excluded.payload,
    attempts = 0, next_attempt = 0, parked = '', update_time = excluded.update_time
WHERE excluded.revision > records.revision
"""


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One call's record as of ``revision``; ``final`` once the call has ended."""

    tenant_id: str
    call_id: str
    revision: int
    final: bool
    payload: bytes
    attempts: int = 0
    update_time: float = 0.0


class OutboxFull(Exception):
    """The outbox holds ``max_calls`` calls already: a new call's record cannot be queued."""


class OutboxLocked(Exception):
    """Another process holds this outbox file."""


class RecordOutbox:
    """Durable, bounded store of the latest record snapshot per call, awaiting delivery."""

    def __init__(self, path: Path, max_calls: int = 100_000) -> None:
        self.path = path
        self.max_calls = max_calls
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="record-outbox")
        self._db: sqlite3.Connection | None = None
        self._lock: IO[bytes] | None = None
        self._calls = 0

    async def _run(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    async def open(self) -> list[Snapshot]:
        """Opens (creating) the file; returns the live calls a previous process left behind."""
        return list(await self._run(self._open))

    def _open(self) -> list[Snapshot]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock = open(f"{self.path}.lock", "ab")  # noqa: SIM115 - held until close()
        try:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as e:
            lock.close()
            raise OutboxLocked(
                f"the record outbox {self.path} is in use by another gateway process; give each"
                " process its own VOICEAI_RECORD_OUTBOX_PATH"
            ) from e
        self._lock = lock
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute(_SCHEMA)
        self._db = db
        self._calls = db.execute("SELECT count(*) FROM records").fetchone()[0]
        rows = db.execute(
            "SELECT tenant_id, call_id, revision, final, payload, attempts, update_time"
            " FROM records WHERE final = 0"
        ).fetchall()
        return [Snapshot(t, c, r, bool(f), p, a, u) for t, c, r, f, p, a, u in rows]

    async def put(self, snapshot: Snapshot) -> bool:
        """Stores ``snapshot`` unless a same or newer revision is there; False when it was older.

        Raises ``OutboxFull`` for a new call when ``max_calls`` calls are queued."""
        return bool(await self._run(self._put, snapshot))

    def _put(self, s: Snapshot) -> bool:
        db = self._conn()
        exists = db.execute(
            "SELECT 1 FROM records WHERE tenant_id = ? AND call_id = ?", (s.tenant_id, s.call_id)
        ).fetchone()
        if exists is None and self._calls >= self.max_calls:
            raise OutboxFull(f"the record outbox holds {self._calls} calls (VOICEAI_RECORD_OUTBOX_MAX_CALLS)")
        changed = db.execute(
            _PUT, (s.tenant_id, s.call_id, s.revision, int(s.final), s.payload, time.time())
        ).rowcount
        if exists is None and changed:
            self._calls += 1
        return changed > 0

    async def due(self, limit: int) -> list[Snapshot]:
        """Up to ``limit`` snapshots not yet acknowledged whose retry time has come."""
        return list(await self._run(self._due, limit, time.time()))

    def _due(self, limit: int, now: float) -> list[Snapshot]:
        rows = (
            self._conn()
            .execute(
                "SELECT tenant_id, call_id, revision, final, payload, attempts, update_time FROM records"
                " WHERE revision > sent_revision AND parked = '' AND next_attempt <= ?"
                " ORDER BY next_attempt LIMIT ?",
                (now, limit),
            )
            .fetchall()
        )
        return [Snapshot(t, c, r, bool(f), p, a, u) for t, c, r, f, p, a, u in rows]

    async def next_due_in(self) -> float | None:
        """Seconds until the earliest pending retry (0 when one is due now), None when idle."""
        return await self._run(self._next_due_in)

    def _next_due_in(self) -> float | None:
        row = (
            self._conn()
            .execute("SELECT min(next_attempt) FROM records WHERE revision > sent_revision AND parked = ''")
            .fetchone()
        )
        return None if row[0] is None else max(0.0, row[0] - time.time())

    async def acknowledged(self, s: Snapshot) -> None:
        """tenant_svc stored ``s``: a final snapshot leaves; a live call's row stays, marked sent."""
        await self._run(self._acknowledged, s)

    def _acknowledged(self, s: Snapshot) -> None:
        db = self._conn()
        key = (s.tenant_id, s.call_id, s.revision)
        if s.final:
            gone = db.execute(
                "DELETE FROM records WHERE tenant_id = ? AND call_id = ? AND revision = ?", key
            ).rowcount
            self._calls -= gone
        else:
            db.execute(
                "UPDATE records SET sent_revision = max(sent_revision, ?3), attempts = 0"
                " WHERE tenant_id = ?1 AND call_id = ?2",
                key,
            )

    async def retry_later(self, s: Snapshot, delay_s: float, *, parked: str = "") -> None:
        """Delivery failed: try again after ``delay_s``, or never (``parked`` says why)."""
        await self._run(self._retry_later, s, delay_s, parked)

    def _retry_later(self, s: Snapshot, delay_s: float, parked: str) -> None:
        self._conn().execute(
            "UPDATE records SET attempts = attempts + 1, next_attempt = ?, parked = ?"
            " WHERE tenant_id = ? AND call_id = ? AND revision = ?",
            (time.time() + delay_s, parked, s.tenant_id, s.call_id, s.revision),
        )

    async def counts(self) -> dict[str, int]:
        """Rows by state: ``pending`` (awaiting delivery), ``live`` (sent, call running), ``parked``."""
        return dict(await self._run(self._counts))

    def _counts(self) -> dict[str, int]:
        pending, live, parked = (
            self._conn()
            .execute(
                "SELECT coalesce(sum(revision > sent_revision AND parked = ''), 0),"
                " coalesce(sum(revision = sent_revision), 0), coalesce(sum(parked != ''), 0) FROM records"
            )
            .fetchone()
        )
        return {"pending": pending, "live": live, "parked": parked}

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("the record outbox is not open")
        return self._db

    async def close(self) -> None:
        """Closes the file and releases the lock; queued snapshots stay for the next start."""
        if self._db is not None:
            await self._run(self._close)
        self._pool.shutdown(wait=False)

    def _close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
        if self._lock is not None:
            self._lock.close()  # closing the descriptor releases the flock
            self._lock = None


def default_outbox_path(configured: str, port: int, root: Path | None = None, worker: int = -1) -> Path:
    """Where this process's outbox lives: the configured path, or ``var/records/gateway-<port>``;
    worker ``n`` of a group sharing the port (``gateway --workers``) gets ``...-w<n>``, so each
    has its own file and its replacement, with the same index, replays what it left."""
    if configured:
        path = Path(configured.replace("{port}", str(port)).replace("{pid}", str(os.getpid())))
    else:
        path = (root or Path("var")) / "records" / f"gateway-{port}.sqlite3"
    return path.with_name(f"{path.stem}-w{worker}{path.suffix}") if worker >= 0 else path


__all__ = ["OutboxFull", "OutboxLocked", "RecordOutbox", "Snapshot", "default_outbox_path"]
