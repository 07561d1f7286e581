"""Who is calling: the identity every credential kind resolves to."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

ADMIN = "admin"
AGENT = "agent"
VIEWER = "viewer"
PLATFORM = "platform"
ROLES = frozenset({ADMIN, AGENT, VIEWER, PLATFORM})

CredentialKind = Literal["jwt", "api_key", "internal"]
CREDENTIAL_KINDS: frozenset[str] = frozenset({"jwt", "api_key", "internal"})


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller: its subject, the tenant it belongs to, and its roles.

    ``tenant_id`` is None exactly for platform operators (role ``platform``), who may act on any
    tenant; everyone else is bound to one tenant. The invariant is checked here so no verifier
    can build a tenant-less principal by mistake.
    """

    subject: str
    tenant_id: str | None
    roles: frozenset[str]
    kind: CredentialKind
    # Internal tokens only: the service the token was minted for and the call it is bound to.
    audience: str = ""
    call_id: str = ""

    def __post_init__(self) -> None:
        if not self.subject:
            raise ValueError("a principal needs a subject")
        unknown = self.roles - ROLES
        if unknown:
            raise ValueError(f"unknown roles {sorted(unknown)}; known roles are {sorted(ROLES)}")
        if self.kind not in CREDENTIAL_KINDS:
            raise ValueError(f"unknown credential kind {self.kind!r}")
        if (self.tenant_id is None) != (PLATFORM in self.roles):
            raise ValueError("a principal has no tenant exactly when it has the platform role")

    @property
    def is_platform(self) -> bool:
        return self.tenant_id is None

    def may_act_for(self, tenant_id: str) -> bool:
        """Whether this principal may work on ``tenant_id``'s data."""
        return self.tenant_id is None or self.tenant_id == tenant_id


def known_roles(values: object) -> frozenset[str]:
    """The roles we know among ``values`` (a list, or a space-separated string as some identity
    providers emit). Others are ignored: providers add their own (``offline_access``...)."""
    if isinstance(values, str):
        values = values.split()
    if not isinstance(values, list | tuple | set | frozenset):
        return frozenset()
    return frozenset(v for v in values if isinstance(v, str) and v in ROLES)
