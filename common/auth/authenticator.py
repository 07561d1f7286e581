"""From an ``authorization`` header value to a ``Principal``: one entry point for every kind.

``Bearer <jwt>`` is a user token (or an internal token, told apart by its issuer);
``Bearer vai_...`` and ``ApiKey vai_...`` are API keys. Verified tokens are remembered in a
bounded LRU keyed by a SHA-256 of the header (never the token itself) until the earlier of
their ``exp`` and ``cache_s``: a hit costs a hash and a dict lookup instead of a signature check.
API keys are not cached here; their records are (``CachedApiKeyStore``), which bounds how long a
revoked key keeps working.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import OrderedDict

from common.auth.api_keys import ApiKeyVerifier, looks_like_api_key
from common.auth.principal import Principal
from common.auth.tokens import JwtVerifier, unverified_issuer
from common.errors import PermissionDenied, Unauthenticated, VoiceAIError

log = logging.getLogger(__name__)

# Below grpc's own 8 KiB metadata limit; large identity-provider tokens stay well under it.
MAX_HEADER_CHARS = 6144
HOW_TO = "send 'authorization: Bearer <token>' or 'authorization: ApiKey <key>'"


class Authenticator:
    """Verifies credentials with whichever verifiers this process has.

    ``users`` checks identity-provider (or dev) tokens, ``internal`` the mesh's internal tokens,
    ``api_keys`` keys against the key store (edge only).
    """

    def __init__(
        self,
        *,
        users: JwtVerifier | None = None,
        internal: JwtVerifier | None = None,
        api_keys: ApiKeyVerifier | None = None,
        cache_s: float = 60.0,
        cache_size: int = 4096,
    ) -> None:
        self.users = users
        self.internal = internal
        self.api_keys = api_keys
        self._cache_s = cache_s
        self._cache_size = cache_size
        self._cache: OrderedDict[bytes, tuple[Principal, float]] = OrderedDict()

    async def authenticate(self, header: str) -> Principal:
        """The caller's principal, or ``Unauthenticated`` (``Unavailable`` when a key store or
        identity provider cannot answer). Messages never contain the credential."""
        if not header:
            raise Unauthenticated(f"missing 'authorization' metadata: {HOW_TO}")
        if len(header) > MAX_HEADER_CHARS:
            raise Unauthenticated(f"'authorization' metadata is longer than {MAX_HEADER_CHARS} characters")
        scheme, _, credential = header.partition(" ")
        credential = credential.strip()
        scheme = scheme.lower()
        if scheme not in ("bearer", "apikey") or not credential:
            raise Unauthenticated(f"unsupported 'authorization' metadata: {HOW_TO}")
        try:
            if scheme == "apikey" or looks_like_api_key(credential):
                return await self._api_key(credential)
            return await self._token(credential)
        except VoiceAIError:
            raise
        except Exception as error:
            # Hostile input must never surface as an internal error (nor its text, which could
            # quote the credential): log the type for us, answer a plain refusal.
            log.warning("auth: credential check failed unexpectedly (%s)", type(error).__name__)
            raise Unauthenticated("credential could not be verified") from None

    async def _api_key(self, credential: str) -> Principal:
        if self.api_keys is None:
            raise PermissionDenied(
                "API keys are accepted at the gateway and tenant service only; this service is"
                " internal and accepts only the internal token the gateway forwards"
            )
        return await self.api_keys.verify(credential)

    async def _token(self, token: str) -> Principal:
        digest = hashlib.sha256(token.encode()).digest()
        now = time.time()
        hit = self._cache.get(digest)
        if hit is not None:
            if hit[1] > now:
                self._cache.move_to_end(digest)
                return hit[0]
            del self._cache[digest]
        verifier = self._verifier_for(token)
        principal, expires = await verifier.verify(token)
        self._remember(digest, principal, min(expires, now + self._cache_s))
        return principal

    def _verifier_for(self, token: str) -> JwtVerifier:
        if self.internal is not None and unverified_issuer(token) == self.internal.rules.issuer:
            return self.internal
        if self.users is not None:
            return self.users
        if self.internal is not None:
            return self.internal  # its issuer check gives the precise refusal
        raise Unauthenticated("this service accepts no bearer tokens")

    def _remember(self, digest: bytes, principal: Principal, until: float) -> None:
        if self._cache_size <= 0:
            return
        self._cache[digest] = (principal, until)
        self._cache.move_to_end(digest)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
