"""API keys: ``vai_<key_id>_<secret>``, stored only as a hash, looked up through ``ApiKeyStore``.

The ``vai_`` prefix makes leaked keys easy to spot (secret scanners, log filters); ``key_id`` is
public (12 base32 characters) and finds the record; ``secret`` is 32 random bytes, url-safe.

Hash at rest: HMAC-SHA256(pepper, key_id ":" secret) when a server pepper is configured, else
SHA-256 of the same. A fast hash is the right tool here, unlike for passwords: slow hashes
(bcrypt, argon2) exist to stop guessing of low-entropy human secrets, and a 256-bit random
secret cannot be guessed, so they would only add milliseconds of CPU to every call. The pepper,
kept outside the database, means a stolen table alone cannot even confirm a candidate key, and
hashing the key id in binds each hash to its row. Stored hashes carry their scheme
(``hmac-sha256$`` / ``sha256$``) so a pepper can be introduced without invalidating old keys.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Protocol

from common.auth.principal import Principal, known_roles
from common.errors import Unauthenticated, Unavailable, VoiceAIError

log = logging.getLogger(__name__)

PREFIX = "vai_"
KEY_ID_LENGTH = 12
SECRET_BYTES = 32
_KEY_ID_ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"
_FORMAT = re.compile(r"^vai_([a-z2-7]{12})_([A-Za-z0-9_-]{43,128})$")
_HMAC = "hmac-sha256$"
_PLAIN = "sha256$"


def generate_api_key(pepper: bytes | None = None) -> tuple[str, str, str]:
    """A new key: ``(plaintext, key_id, secret_hash)``. Show the plaintext to its owner once;
    store only ``key_id`` and ``secret_hash``."""
    key_id = "".join(secrets.choice(_KEY_ID_ALPHABET) for _ in range(KEY_ID_LENGTH))
    secret = secrets.token_urlsafe(SECRET_BYTES)
    return f"{PREFIX}{key_id}_{secret}", key_id, hash_secret(key_id, secret, pepper)


def hash_secret(key_id: str, secret: str, pepper: bytes | None = None) -> str:
    """The stored hash of a key's secret, scheme-prefixed (HMAC with a pepper, else SHA-256)."""
    message = f"{key_id}:{secret}".encode()
    if pepper:
        return _HMAC + hmac.new(pepper, message, hashlib.sha256).hexdigest()
    return _PLAIN + hashlib.sha256(message).hexdigest()


def parse_api_key(plaintext: str) -> tuple[str, str] | None:
    """``(key_id, secret)``, or None when ``plaintext`` is not shaped like one of our keys."""
    match = _FORMAT.match(plaintext)
    return (match.group(1), match.group(2)) if match else None


def looks_like_api_key(credential: str) -> bool:
    """Whether ``credential`` is shaped like one of our API keys (the ``vai_`` prefix)."""
    return credential.startswith(PREFIX)


@dataclass(frozen=True)
class ApiKeyRecord:
    """What the store keeps for one key. ``tenant_id`` None marks a platform operator's key."""

    key_id: str
    tenant_id: str | None
    roles: frozenset[str]
    secret_hash: str = field(repr=False)
    revoked: bool = False
    expires_at: datetime | None = None  # timezone-aware


class ApiKeyStore(Protocol):
    """Finds a key's record by its public id (the tenant service implements it on PostgreSQL).
    Raise ``common.errors.Unavailable`` when the store cannot answer."""

    async def lookup(self, key_id: str) -> ApiKeyRecord | None: ...


class InMemoryApiKeyStore:
    """Records in a dict: for tests and single-process demos."""

    def __init__(self, records: list[ApiKeyRecord] | None = None) -> None:
        self._records = {r.key_id: r for r in records or ()}
        self.lookups = 0

    def add(self, record: ApiKeyRecord) -> None:
        self._records[record.key_id] = record

    def revoke(self, key_id: str) -> None:
        self._records[key_id] = replace(self._records[key_id], revoked=True)

    async def lookup(self, key_id: str) -> ApiKeyRecord | None:
        self.lookups += 1
        return self._records.get(key_id)


class CachedApiKeyStore:
    """Remembers records (and unknown ids) for a while in front of a slower store.

    Bounded staleness: a key revoked in the store stops working here within ``ttl_s`` (the
    process that revokes can call ``invalidate`` to make it immediate there). Unknown ids are
    remembered for ``negative_ttl_s`` so a stream of made-up ids costs one store query each per
    window, and a key created a moment ago is usable within that time. At most ``max_entries``
    records are kept (least recently used go first).
    """

    def __init__(
        self,
        store: ApiKeyStore,
        *,
        ttl_s: float = 30.0,
        negative_ttl_s: float = 5.0,
        max_entries: int = 10_000,
    ) -> None:
        self._store = store
        self._ttl_s = ttl_s
        self._negative_ttl_s = negative_ttl_s
        self._max_entries = max_entries
        self._entries: OrderedDict[str, tuple[ApiKeyRecord | None, float]] = OrderedDict()

    async def lookup(self, key_id: str) -> ApiKeyRecord | None:
        now = time.monotonic()
        entry = self._entries.get(key_id)
        if entry is not None and entry[1] > now:
            self._entries.move_to_end(key_id)
            return entry[0]
        record = await self._store.lookup(key_id)
        ttl = self._ttl_s if record is not None else self._negative_ttl_s
        self._entries[key_id] = (record, time.monotonic() + ttl)
        self._entries.move_to_end(key_id)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)
        return record

    def invalidate(self, key_id: str | None = None) -> None:
        """Forget one key (after revoking it) or everything."""
        if key_id is None:
            self._entries.clear()
        else:
            self._entries.pop(key_id, None)


_DUMMY_HASH = hash_secret("a" * KEY_ID_LENGTH, "b" * 43)


def _same(a: str, b: str) -> bool:
    # Constant time; bytes because compare_digest refuses non-ASCII str (a corrupt row).
    return hmac.compare_digest(a.encode(), b.encode())


class ApiKeyVerifier:
    """Checks a presented key against its record and returns the principal it stands for."""

    def __init__(self, store: ApiKeyStore, pepper: bytes | None = None) -> None:
        self._store = store
        self._pepper = pepper or None

    async def verify(self, plaintext: str) -> Principal:
        parsed = parse_api_key(plaintext)
        if parsed is None:
            raise Unauthenticated("malformed API key: expected 'vai_<key id>_<secret>' as issued")
        key_id, secret = parsed
        try:
            record = await self._store.lookup(key_id)
        except VoiceAIError:
            raise
        except Exception as error:
            log.error("auth: API key store failed (%s)", type(error).__name__)
            raise Unavailable("API keys cannot be checked right now; retry shortly") from None
        if record is None:
            _same(_DUMMY_HASH, hash_secret(key_id, secret))  # the same work as for a known id
            raise Unauthenticated("API key not recognised")
        if not _same(self._expected(record, secret), record.secret_hash):
            raise Unauthenticated("API key not recognised")
        # Only a holder of the right secret learns that a key was revoked or expired.
        if record.revoked:
            raise Unauthenticated("API key revoked; create a new one")
        if record.expires_at is not None and record.expires_at <= datetime.now(UTC):
            raise Unauthenticated("API key expired; create a new one")
        try:
            return Principal(f"api_key:{key_id}", record.tenant_id, known_roles(record.roles), "api_key")
        except ValueError:
            # A tenant key claiming the platform role (or a tenant-less key without it): refuse
            # rather than guess which half of the record is wrong.
            log.error("auth: API key %s has an inconsistent record (tenant vs platform role)", key_id)
            raise Unauthenticated("API key not usable; ask an operator to reissue it") from None

    def _expected(self, record: ApiKeyRecord, secret: str) -> str:
        if record.secret_hash.startswith(_HMAC):
            if self._pepper is None:
                log.error("auth: API key %s is peppered but no pepper is configured", record.key_id)
                return ""
            return hash_secret(record.key_id, secret, self._pepper)
        if record.secret_hash.startswith(_PLAIN):
            return hash_secret(record.key_id, secret)
        log.error("auth: API key %s has a hash in an unknown scheme", record.key_id)
        return ""
