"""The server interceptor: every RPC but health and reflection needs a credential.

Per RPC, before the handler runs: authenticate the ``authorization`` metadata
(UNAUTHENTICATED), check that ``x-tenant-id`` is the credential's tenant (PERMISSION_DENIED,
saying nothing about either tenant; platform operators may name any tenant), check the method's
permission (PERMISSION_DENIED naming it). Then the handler runs with the principal bound
(``common.context.principal()``).

It composes with ``ContextServerInterceptor``, which must come first (outer): ``ServiceHost``
puts it there and takes this one through ``interceptors=``. The context interceptor validates
and binds the tenant and call ids; this one adds the principal to what it bound.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Any

import grpc
import grpc.aio
from prometheus_client import Counter

from common import context
from common.auth.authenticator import Authenticator
from common.auth.hops import HopRules
from common.auth.internal import InternalTokenIssuer
from common.auth.principal import Principal
from common.auth.rbac import DEFAULT_POLICY, AccessPolicy
from common.errors import PermissionDenied, Unauthenticated, VoiceAIError
from common.interceptors import EXEMPT_PREFIXES, metadata_dict, rejecting_handler, wrap_handler
from common.tls import peer_identity

log = logging.getLogger(__name__)

REFUSALS = Counter("voiceai_auth_refusals_total", "RPCs refused by the auth interceptor", ["code"])


class AuthServerInterceptor(grpc.aio.ServerInterceptor):
    """Admits an RPC only with a valid credential for its tenant and the method's permission.

    At the edge, pass ``internal_issuer``: calls the handler makes to the next hop then carry a
    fresh internal token for the same principal instead of the caller's own credential (which
    may be an API key the next hop cannot check, or a token that expires mid-call).
    """

    def __init__(
        self,
        authenticator: Authenticator,
        policy: AccessPolicy = DEFAULT_POLICY,
        *,
        internal_issuer: InternalTokenIssuer | None = None,
        hops: HopRules | None = None,
    ) -> None:
        self._authenticator = authenticator
        self._policy = policy
        self._issuer = internal_issuer
        self._hops = hops

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or method.startswith(EXEMPT_PREFIXES):
            return handler
        try:
            principal = await self.admit(method, handler_call_details.invocation_metadata)
        except VoiceAIError as error:
            REFUSALS.labels(error.code.name.lower()).inc()
            # Our own message: it never quotes the credential.
            log.info("auth: refused %s (%s): %s", method, error.code.name, error.message)
            return rejecting_handler(handler, error.code, error.message)
        except Exception:
            # A bug here must fail closed, and not as grpc's UNKNOWN carrying the exception text.
            log.exception("auth: checking a credential for %s failed", method)
            REFUSALS.labels("internal").inc()
            return rejecting_handler(
                handler, grpc.StatusCode.INTERNAL, "the credential check failed; it was logged"
            )
        check = (
            partial(self._check_peer, method, principal.kind == "internal")
            if self._hops is not None and self._hops.mutual_tls
            else None
        )
        return wrap_handler(handler, method, partial(self._enter, principal), check)

    async def admit(self, method: str, metadata: Sequence[Any] | None) -> Principal:
        """The principal for an RPC to ``method`` with ``metadata``, or the error to answer."""
        if sum(1 for item in metadata or () if item[0] == context.AUTHORIZATION_HEADER) > 1:
            raise Unauthenticated("send exactly one 'authorization' metadata entry")
        md = metadata_dict(metadata)
        principal = await self._authenticator.authenticate(md.get(context.AUTHORIZATION_HEADER, ""))
        tenant = md.get(context.TENANT_HEADER, "")
        if principal.tenant_id is not None:
            if not tenant:
                raise Unauthenticated(
                    f"missing '{context.TENANT_HEADER}' metadata: every call must name its tenant"
                )
            if tenant != principal.tenant_id:
                raise PermissionDenied(
                    f"this credential is not valid for the tenant named in '{context.TENANT_HEADER}'"
                )
        if self._hops is not None:
            self._hops.check_credential(principal, method, md.get(context.CALL_HEADER, ""))
        self._policy.check(principal, method)
        return principal

    def _check_peer(self, method: str, internal_token: bool, sctx: grpc.aio.ServicerContext) -> None:
        assert self._hops is not None
        peer = peer_identity(sctx)
        try:
            self._hops.check_peer(peer, method, internal_token)
        except PermissionDenied as error:
            REFUSALS.labels("permission_denied").inc()
            log.warning("tls: refused %s from peer %s: %s", method, peer or "(no certificate)", error.message)
            raise

    def _enter(self, principal: Principal) -> None:
        context.bind_principal(principal)
        ctx = context.current()
        if self._issuer is not None and ctx is not None:
            mint = partial(self._issuer.authorization_for, principal)  # (service, call id) -> header
            context.bind(dataclasses.replace(ctx, forward_authorization=mint))
