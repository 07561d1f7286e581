"""Sealing of conversation history in Redis with the tenant's history keys.

Each stored entry is AES-GCM sealed (``common.crypto.envelope``) with the tenant's newest
history key, bound to tenant, call and the ``history`` field, so a Redis dump or SCAN shows no
text and an entry copied to another call or tenant does not open. Keys come from tenant_svc's
``DataKeyInternalService`` (with the call's own internal credential, through the tenant channel
pool's context propagation) and are cached for ``ttl_s``: a tenant's shredded keys stop
working here within that time, and history itself expires with its call.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

import grpc
import grpc.aio

from common.crypto import DataLoss, associated_data, open_sealed, seal
from common.crypto.envelope import key_version
from common.discovery import ChannelPool
from common.errors import Unavailable
from common.gen.voiceai.tenant.v1 import data_key_internal_service_pb2 as dki
from common.gen.voiceai.tenant.v1 import data_key_internal_service_pb2_grpc as dki_grpc

FIELD = "history"


class HistorySealer:
    """Seals and opens history entries per tenant (a ``HistoryCodec`` for the Redis store)."""

    def __init__(
        self,
        pool: ChannelPool,
        *,
        ttl_s: float = 30.0,
        timeout_s: float = 2.0,
        max_tenants: int = 4096,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._pool = pool
        self._ttl_s = ttl_s
        self._timeout_s = timeout_s
        self._max = max_tenants
        self._clock = clock
        # tenant -> ({version: key}, newest version, fetched at)
        self._keys: OrderedDict[str, tuple[dict[int, bytes], int, float]] = OrderedDict()

    async def _fetch(self, tenant_id: str) -> tuple[dict[int, bytes], int]:
        try:
            async with self._pool.stream() as channel:
                reply = await dki_grpc.DataKeyInternalServiceStub(channel).GetHistoryKeys(
                    dki.GetHistoryKeysRequest(), timeout=self._timeout_s
                )
        except grpc.aio.AioRpcError as e:
            raise Unavailable(
                f"the tenant's history key could not be loaded ({e.code().name}); retry shortly"
            ) from e
        keys = {k.version: bytes(k.key) for k in reply.keys}
        if not keys:
            raise Unavailable("tenant_svc returned no history key")
        self._keys[tenant_id] = (keys, max(keys), self._clock())
        self._keys.move_to_end(tenant_id)
        while len(self._keys) > self._max:
            self._keys.popitem(last=False)
        return keys, max(keys)

    async def _ring(self, tenant_id: str, *, refresh: bool = False) -> tuple[dict[int, bytes], int]:
        found = self._keys.get(tenant_id)
        if found is not None and not refresh and self._clock() - found[2] < self._ttl_s:
            return found[0], found[1]
        return await self._fetch(tenant_id)

    async def seal(self, tenant_id: str, call_id: str, data: bytes) -> bytes:
        """``data`` sealed with the tenant's newest history key."""
        keys, newest = await self._ring(tenant_id)
        return seal(keys[newest], newest, data, associated_data(tenant_id, call_id, FIELD))

    async def open(self, tenant_id: str, call_id: str, sealed: bytes) -> bytes:
        """The entry; DataLoss when it was altered, moved, or its key is gone."""
        version = key_version(sealed, FIELD)
        keys, _ = await self._ring(tenant_id)
        if version not in keys:  # rotated since we cached, or shredded
            keys, _ = await self._ring(tenant_id, refresh=True)
            if version not in keys:
                raise DataLoss("the key that sealed this conversation history no longer exists")
        return open_sealed(keys[version], sealed, associated_data(tenant_id, call_id, FIELD), FIELD)


__all__ = ["HistorySealer"]
