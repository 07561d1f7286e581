"""What tenant_svc tells the rest of the mesh when configuration changes.

A listener gets ``(kind, tenant_id, resource_id)`` after the change has committed; the Redis
config cache uses it to invalidate (a running call keeps the config it started with).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

ChangeListener = Callable[[str, str, str], Awaitable[None] | None]
