"""JWT verification: signature, algorithm, issuer, audience, time claims, tenant and roles.

Every failure is ``Unauthenticated`` with a message that says what to fix and never contains
the token. The algorithm allow-list is fixed by configuration, never taken from the token, and
never contains ``none`` or ``HS*`` (checked again here, whatever the settings say).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import jwt
from jwt import exceptions as jwt_errors

from common import context
from common.auth.jwks import KeySource
from common.auth.principal import PLATFORM, CredentialKind, Principal, known_roles
from common.auth.settings import forbidden_algorithm
from common.errors import Unauthenticated

# Header values we echo in messages must be short and plain: they come from the caller.
_ECHOABLE = re.compile(r"^[A-Za-z0-9_-]{1,16}$")
_REQUIRED = ("exp", "iat", "sub")


@dataclass(frozen=True)
class TokenRules:
    """What one issuer's tokens must satisfy, and where its tenant and roles claims are."""

    issuer: str
    audience: str
    algorithms: tuple[str, ...] = ("RS256", "ES256")
    leeway_s: float = 30.0
    tenant_claims: tuple[str, ...] = ("tenant_id", "https://voiceai/tenant_id")
    roles_claims: tuple[str, ...] = ("roles", "https://voiceai/roles")
    kind: CredentialKind = "jwt"
    # Further audiences accepted besides ``audience`` (internal tokens: one per mesh service;
    # which one a service needs is ``common.auth.hops``'s check).
    extra_audiences: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        bad = [alg for alg in self.algorithms if forbidden_algorithm(alg)]
        if bad or not self.algorithms:
            raise ValueError(
                f"refusing algorithms {bad or '(none given)'}: use asymmetric ones (RS256, ES256)"
            )
        if not self.issuer or not self.audience:
            raise ValueError("an issuer and an audience are required: tokens are checked against both")


def unverified_issuer(token: str) -> str:
    """The ``iss`` a token claims, only to pick which verifier checks it (that verifier then
    checks the issuer and the signature for real). '' when it has none or does not parse."""
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except (jwt_errors.PyJWTError, ValueError, TypeError):
        return ""
    issuer = claims.get("iss")
    return issuer if isinstance(issuer, str) else ""


class JwtVerifier:
    """Verifies one issuer's tokens with keys from a ``KeySource`` and turns them into principals."""

    def __init__(self, keys: KeySource, rules: TokenRules) -> None:
        self.keys = keys
        self.rules = rules
        self._allowed = {alg.upper(): alg for alg in rules.algorithms}

    async def verify(self, token: str) -> tuple[Principal, float]:
        """The principal and the token's expiry (epoch seconds), or ``Unauthenticated``."""
        try:
            header = jwt.get_unverified_header(token)
        except (jwt_errors.PyJWTError, ValueError, TypeError):
            raise Unauthenticated(
                "malformed token: expected a JWT (three base64url parts separated by dots)"
            ) from None
        alg = self._check_algorithm(header.get("alg"))
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise Unauthenticated("malformed token: the 'kid' header must be a string")
        key = await self.keys.key_for(kid, alg)
        claims = self._decode(token, key, alg)
        return self._principal(claims), float(claims["exp"])

    def _check_algorithm(self, alg: Any) -> str:
        if not isinstance(alg, str) or not alg:
            raise Unauthenticated("malformed token: the header has no 'alg'")
        shown = f"'{alg}'" if _ECHOABLE.match(alg) else "(unprintable)"
        if alg.lower() == "none":
            raise Unauthenticated("unsigned token (algorithm 'none') is never accepted")
        if forbidden_algorithm(alg):
            raise Unauthenticated(
                f"unsupported algorithm {shown}: shared-secret (HS*) tokens are never accepted;"
                f" use one of {', '.join(self.rules.algorithms)}"
            )
        if alg not in self._allowed.values():
            raise Unauthenticated(
                f"unsupported algorithm {shown}: this service accepts {', '.join(self.rules.algorithms)}"
            )
        return alg

    def _decode(self, token: str, key: Any, alg: str) -> dict[str, Any]:
        rules = self.rules
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[alg],  # already checked against the configured allow-list
                audience=[rules.audience, *rules.extra_audiences]
                if rules.extra_audiences
                else rules.audience,
                issuer=rules.issuer,
                leeway=rules.leeway_s,
                options={"require": list(_REQUIRED), "strict_aud": False},
            )
        except jwt_errors.ExpiredSignatureError:
            raise Unauthenticated("token expired; get a new one") from None
        except jwt_errors.ImmatureSignatureError:
            raise Unauthenticated(
                "token not yet valid (its 'nbf' or 'iat' is in the future); check the issuer's clock"
            ) from None
        except jwt_errors.InvalidAudienceError:
            raise Unauthenticated(
                f"wrong audience: this service accepts tokens for '{rules.audience}'"
            ) from None
        except jwt_errors.InvalidIssuerError:
            raise Unauthenticated(f"wrong issuer: this service trusts tokens from '{rules.issuer}'") from None
        except jwt_errors.MissingRequiredClaimError as error:
            raise Unauthenticated(f"token lacks the required '{error.claim}' claim") from None
        except jwt_errors.InvalidSignatureError:
            raise Unauthenticated(
                "token signature does not verify: it was altered or signed by another key"
            ) from None
        except (jwt_errors.InvalidIssuedAtError, jwt_errors.InvalidSubjectError, jwt_errors.InvalidJTIError):
            raise Unauthenticated(
                "malformed token: 'iat' must be a number and 'sub', 'jti' strings"
            ) from None
        except (jwt_errors.PyJWTError, ValueError, TypeError, OverflowError):
            # Decode errors (bad base64, JSON, non-numeric exp/nbf) and key/algorithm mismatches.
            raise Unauthenticated("malformed token: it does not decode as a signed JWT") from None
        return claims

    def _principal(self, claims: dict[str, Any]) -> Principal:
        rules = self.rules
        subject = claims["sub"]
        if not subject:
            raise Unauthenticated("token has an empty 'sub' claim")
        roles = frozenset().union(*(known_roles(claims.get(name)) for name in rules.roles_claims))
        bound = _binding(claims) if rules.kind == "internal" else ("", "")
        tenants = [claims[name] for name in rules.tenant_claims if claims.get(name) is not None]
        if PLATFORM in roles:
            # Platform operators act on whichever tenant a request names; a home tenant claim,
            # if any, carries no extra meaning.
            return Principal(subject, None, roles, rules.kind, *bound)
        if not tenants:
            raise Unauthenticated(
                f"token has no '{rules.tenant_claims[0]}' claim; only platform operators may omit it"
            )
        tenant = tenants[0]
        if any(other != tenant for other in tenants):
            raise Unauthenticated("token carries conflicting tenant claims")
        if not isinstance(tenant, str) or not context.valid_id(tenant):
            raise Unauthenticated(
                f"token's '{rules.tenant_claims[0]}' claim must be 1-128 letters, digits, '.', '_', ':' or '-'"
            )
        return Principal(subject, tenant, roles, rules.kind, *bound)


def _binding(claims: dict[str, Any]) -> tuple[str, str]:
    """An internal token's (audience, call id): what ``common.auth.hops`` checks per service."""
    aud = claims.get("aud")
    call = claims.get("call_id", "")
    if not isinstance(aud, str) or not isinstance(call, str):
        raise Unauthenticated("malformed internal token: 'aud' and 'call_id' must be strings")
    return aud, call
