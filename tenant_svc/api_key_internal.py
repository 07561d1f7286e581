"""ApiKeyInternalService: the gateway's API-key lookups, answered from tenant_svc's database.

Internal only (the RBAC rule admits internal credentials alone): the gateway used to open its
own pool to this database for the lookup; now only tenant_svc reads it.
"""

from __future__ import annotations

import grpc.aio
from google.protobuf.timestamp_pb2 import Timestamp

from common.auth import ApiKeyStore
from common.errors import InvalidArgument
from common.gen.voiceai.tenant.v1 import api_key_internal_service_pb2 as pb
from common.gen.voiceai.tenant.v1 import api_key_internal_service_pb2_grpc as pb_grpc

SERVICE = "voiceai.tenant.v1.ApiKeyInternalService"


class ApiKeyInternalServicer(pb_grpc.ApiKeyInternalServiceServicer):
    """Looks key records up by key id (protobuf <-> ``ApiKeyRecord``, nothing else)."""

    def __init__(self, keys: ApiKeyStore) -> None:
        self._keys = keys

    async def LookupApiKey(  # noqa: N802 - gRPC method name
        self, request: pb.LookupApiKeyRequest, context: grpc.aio.ServicerContext
    ) -> pb.LookupApiKeyResponse:
        """The record of ``request.key_id``, or ``found=False``."""
        if not request.key_id or len(request.key_id) > 64:
            raise InvalidArgument("key_id: give the public id of an API key (at most 64 characters)")
        record = await self._keys.lookup(request.key_id)
        if record is None:
            return pb.LookupApiKeyResponse(found=False)
        expire_time = None
        if record.expires_at is not None:
            expire_time = Timestamp()
            expire_time.FromDatetime(record.expires_at)
        return pb.LookupApiKeyResponse(
            found=True,
            key_id=record.key_id,
            tenant_id=record.tenant_id or "",
            roles=sorted(record.roles),
            secret_hash=record.secret_hash,
            revoked=record.revoked,
            expire_time=expire_time,
        )
