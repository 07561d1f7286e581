"""The gateway's own identity toward tenant_svc for bookkeeping writes (call records).

Records are written by the gateway, not on the caller's behalf: an internal token for the
subject ``voiceai-gateway`` bound to the record's tenant, minted with the mesh's internal key, so
the write passes tenant_svc's tenant check and RBAC but never the tenant's API rate limit.
"""

from __future__ import annotations

from collections.abc import Callable

from common.auth.internal import InternalTokenIssuer
from common.auth.principal import AGENT, Principal

GATEWAY_SUBJECT = "voiceai-gateway"


def gateway_credential(issuer: InternalTokenIssuer | None) -> Callable[[str], str] | None:
    """tenant id -> ``authorization`` value for the gateway's writes, or None without a key."""
    if issuer is None:
        return None

    def for_tenant(tenant_id: str) -> str:
        principal = Principal(GATEWAY_SUBJECT, tenant_id, frozenset({AGENT}), "internal")
        return issuer.authorization_for(principal, "tenant")  # audience: tenant_svc

    return for_tenant


__all__ = ["GATEWAY_SUBJECT", "gateway_credential"]
