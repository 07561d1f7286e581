"""The one call-id rule of the mesh: what a call id may look like, everywhere.

A call id names the call's record (``tenants/{tenant}/calls/{call_id}``), so it follows the
tenant API's resource-id rule: 1-63 lowercase letters, digits or hyphens, starting and ending
with a letter or digit. The rule is case-sensitive: ``DupCase-7`` is refused, never folded into
``dupcase-7`` (two calls must never share one record). The gateway mints an id for a call that
brings none; every service checks ``x-call-id`` with the same rule (``ContextServerInterceptor``)
and tenant_svc checks a record's ``call_id`` with it too, so an id the edge admits is one
tenant_svc stores.
"""

from __future__ import annotations

import re
import uuid

from common.errors import InvalidArgument

CALL_ID_PATTERN = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
MAX_CALL_ID = 63
CALL_ID_RULE = (
    "1-63 lowercase letters, digits or hyphens, starting and ending with a letter or digit"
    " (case-sensitive: uppercase is refused, not folded)"
)


def valid_call_id(value: str) -> bool:
    """Whether ``value`` is a call id under the mesh's one rule."""
    return len(value) <= MAX_CALL_ID and CALL_ID_PATTERN.match(value) is not None


def new_call_id() -> str:
    """A fresh call id (32 lowercase hex digits), minted by the gateway for a call without one."""
    return uuid.uuid4().hex


def check_call_id(value: str, field: str) -> str:
    """``value`` if it is a valid call id, else INVALID_ARGUMENT naming ``field`` and the rule."""
    if not value:
        raise InvalidArgument(f"{field} is required: {CALL_ID_RULE}")
    if not valid_call_id(value):
        raise InvalidArgument(f"{field} must be {CALL_ID_RULE}")
    return value


__all__ = ["CALL_ID_PATTERN", "CALL_ID_RULE", "MAX_CALL_ID", "check_call_id", "new_call_id", "valid_call_id"]
