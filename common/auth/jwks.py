"""Where token-signing public keys come from: one configured key, or an issuer's JWKS URL.

The JWKS is fetched in a thread (never on the event loop), cached, refreshed in the background
once it is ``refresh_s`` old (requests keep using the cached keys meanwhile), and refetched at
once when a token names an unknown ``kid`` (key rotation), at most once per ``min_refetch_s`` so
tokens with made-up kids cannot make us hammer the identity provider.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any, Protocol

from jwt import PyJWK
from jwt.exceptions import PyJWKError, PyJWTError

from common.auth.keys import PublicKey, compatible
from common.errors import Unauthenticated, Unavailable

log = logging.getLogger(__name__)

MAX_JWKS_BYTES = 1 << 20
# With no keys yet, a failed fetch is retried at most this often; requests in between fail fast.
RETRY_AFTER_FAILURE_S = 1.0


class KeySource(Protocol):
    """Finds the public key that verifies a token signed with ``alg`` by key ``kid``."""

    async def key_for(self, kid: str | None, alg: str) -> PublicKey: ...


def _no_key(kid: str | None, alg: str) -> Unauthenticated:
    if kid is None:
        return Unauthenticated(
            f"the token has no 'kid' header and no single trusted key fits algorithm '{alg}'"
        )
    return Unauthenticated(
        "the token's signing key id is not one the issuer publishes (not issued by a trusted issuer,"
        " or the key was retired); get a new token"
    )


class StaticKeySource:
    """One configured public key (PEM file, env, or the dev key): every kid maps to it."""

    def __init__(self, key: PublicKey) -> None:
        self._key = key

    async def key_for(self, kid: str | None, alg: str) -> PublicKey:
        if not compatible(self._key, alg):
            raise Unauthenticated(f"algorithm '{alg}' does not match the issuer's key type")
        return self._key


def _redacted(url: str) -> str:
    # A JWKS URL may carry credentials (user:pass@host or a query token); logs get host and path.
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}{parts.path}"


def fetch_url(url: str, timeout_s: float) -> bytes:
    """Blocking GET with a size limit; runs in a worker thread."""
    request = urllib.request.Request(
        url, headers={"Accept": "application/json", "User-Agent": "voiceai-mesh"}
    )
    with urllib.request.urlopen(request, timeout=timeout_s) as response:  # scheme checked in __init__
        body: bytes = response.read(MAX_JWKS_BYTES + 1)
    if len(body) > MAX_JWKS_BYTES:
        raise ValueError(f"JWKS larger than {MAX_JWKS_BYTES} bytes")
    return body


def parse_jwks(
    body: bytes, algorithms: tuple[str, ...]
) -> dict[str | None, list[tuple[PublicKey, str | None]]]:
    """Usable signing keys by kid. Symmetric ('oct') keys, encryption keys, keys for other
    algorithms and keys that do not parse are skipped, never trusted."""
    document = json.loads(body)
    entries = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise ValueError("JWKS document has no 'keys' list")
    keys: dict[str | None, list[tuple[PublicKey, str | None]]] = {}
    for entry in entries:
        if not isinstance(entry, dict) or entry.get("kty") == "oct" or entry.get("use", "sig") != "sig":
            continue
        alg = entry.get("alg")
        if alg is not None and alg not in algorithms:
            continue
        try:
            key = PyJWK(entry).key
        except (PyJWKError, PyJWTError, ValueError, TypeError, KeyError):
            continue
        kid = entry.get("kid")
        keys.setdefault(kid if isinstance(kid, str) else None, []).append((key, alg))
    return keys


class JwksKeySource:
    """Public keys from an identity provider's JWKS URL, cached (see the module docstring)."""

    def __init__(
        self,
        url: str,
        algorithms: tuple[str, ...],
        *,
        refresh_s: float = 300.0,
        min_refetch_s: float = 30.0,
        timeout_s: float = 5.0,
        fetch: Callable[[str, float], bytes] = fetch_url,
    ) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("https", "http"):
            raise ValueError("the JWKS URL must be http(s)")
        if parts.scheme == "http" and parts.hostname not in ("127.0.0.1", "localhost", "::1"):
            # Whoever can alter the JWKS in transit can mint tokens we accept.
            log.warning("auth: the JWKS URL %s is not https", _redacted(url))
        self._url = url
        self._algorithms = algorithms
        self._refresh_s = refresh_s
        self._min_refetch_s = min_refetch_s
        self._timeout_s = timeout_s
        self._fetch = fetch
        self._keys: dict[str | None, list[tuple[PublicKey, str | None]]] | None = None
        self._fetched_at = 0.0
        self._attempted_at = -float("inf")
        self._fetching: asyncio.Task[None] | None = None
        self.fetches = 0  # successful fetches, for tests and metrics

    async def key_for(self, kid: str | None, alg: str) -> PublicKey:
        now = time.monotonic()
        if self._keys is None:
            if now - self._attempted_at < RETRY_AFTER_FAILURE_S and not self._fetching_now():
                raise _unavailable()  # the provider just failed us: do not wait on it per request
            await self._refresh()
        elif now - self._fetched_at > self._refresh_s:
            self._start_fetch()
        key = self._lookup(kid, alg)
        may_refetch = now - self._attempted_at >= self._min_refetch_s
        if key is None and kid is not None and not self._known(kid) and may_refetch:
            await self._refresh()  # maybe rotated: a key the cached set does not have yet
            key = self._lookup(kid, alg)
        if key is None:
            if kid is not None and self._known(kid):
                raise Unauthenticated(f"algorithm '{alg}' does not match the key the token names")
            raise _no_key(kid, alg)
        return key

    async def prime(self) -> bool:
        """Fetch now (at start-up, before serving); False if the provider did not answer."""
        try:
            await self._refresh()
        except Unavailable:
            return False
        return True

    async def aclose(self) -> None:
        task, self._fetching = self._fetching, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Unavailable):
                await task

    def _lookup(self, kid: str | None, alg: str) -> PublicKey | None:
        assert self._keys is not None
        if kid is None:
            # Without a kid, only an unambiguous key will do.
            candidates = [k for entries in self._keys.values() for k in entries]
        else:
            # Providers that publish keys without kids still sign tokens that name one.
            candidates = self._keys.get(kid) or self._keys.get(None, [])
        fits = [key for key, key_alg in candidates if key_alg in (None, alg) and compatible(key, alg)]
        if kid is None and len(fits) != 1:
            return None
        return fits[0] if fits else None

    def _fetching_now(self) -> bool:
        return self._fetching is not None and not self._fetching.done()

    def _known(self, kid: str) -> bool:
        return self._keys is not None and kid in self._keys

    def _start_fetch(self) -> None:
        if not self._fetching_now():
            self._fetching = asyncio.create_task(self._fetch_keys(), name="jwks-fetch")
            self._fetching.add_done_callback(_retrieve)

    async def _refresh(self) -> None:
        """One fetch at a time: whoever needs keys while a fetch runs waits for that fetch (when
        the provider is down, queued requests fail together rather than one timeout each)."""
        self._start_fetch()
        assert self._fetching is not None
        # Shielded: a caller that gives up must not cancel the fetch others are waiting for.
        await asyncio.shield(self._fetching)

    async def _fetch_keys(self) -> None:
        self._attempted_at = time.monotonic()
        try:
            body = await asyncio.to_thread(self._fetch, self._url, self._timeout_s)
            keys = parse_jwks(body, self._algorithms)
        except Exception as error:
            log.warning(
                "auth: fetching the JWKS from %s failed (%s: %s)%s",
                _redacted(self._url),
                type(error).__name__,
                error,
                "; keeping the cached keys" if self._keys is not None else "",
            )
            if self._keys is None:
                raise _unavailable() from None
            return
        self._keys = keys
        self._fetched_at = time.monotonic()
        self.fetches += 1


def _retrieve(task: asyncio.Task[None]) -> None:
    # Nobody may be waiting on a background fetch; its failure is already logged.
    if not task.cancelled():
        task.exception()


def _unavailable() -> Unavailable:
    return Unavailable("the identity provider's signing keys could not be fetched; retry shortly")


def describe(source: Any) -> str:
    """For start-up logs: where keys come from, without credentials."""
    if isinstance(source, JwksKeySource):
        return f"JWKS {_redacted(source._url)}"
    return "a configured public key"
