"""What the auth tests share: an identity provider (keys, tokens, a JWKS endpoint on loopback)
and a probe service with one method per permission, hosted behind the real interceptors."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from common import context
from common.auth import Auth, AuthSettings, Permission, build_auth
from common.auth.api_keys import ApiKeyStore
from common.auth.rbac import DEFAULT_POLICY
from common.discovery import ChannelPool
from common.server import ServiceBinding, ServiceHost
from common.settings import ServiceSettings

ISSUER = "https://idp.test/"
AUDIENCE = "voiceai-api"
TENANT = "tenant-a"
SERVICE = "test.v1.AuthProbe"
POLICY = DEFAULT_POLICY.extended(
    {
        f"/{SERVICE}/Read": Permission.READ,
        f"/{SERVICE}/Write": Permission.WRITE,
        f"/{SERVICE}/Call": Permission.CALL,
        f"/{SERVICE}/Manage": Permission.MANAGE_TENANTS,
        f"/{SERVICE}/Forward": Permission.CALL,
    }
)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def hand_made(header: dict[str, Any], claims: dict[str, Any], sign: Any = None) -> str:
    """A token assembled by hand, for forms PyJWT refuses to produce (alg none, HS256 with a
    public key as the secret)."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    signature = sign(signing_input.encode()) if sign else b""
    return f"{signing_input}.{b64(signature)}"


def hs256_with(secret: bytes) -> Any:
    return lambda data: hmac.new(secret, data, hashlib.sha256).digest()


class IdentityProvider:
    """Signing keys (RSA and EC, each with a kid) and tokens, as an identity provider has."""

    def __init__(self) -> None:
        self.rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.ec = ec.generate_private_key(ec.SECP256R1())
        self.keys: dict[str, Any] = {"rsa-1": self.rsa, "ec-1": self.ec}
        self.published = ["rsa-1", "ec-1"]

    def jwks(self) -> dict[str, Any]:
        out = []
        for kid in self.published:
            key = self.keys[kid]
            if isinstance(key, rsa.RSAPrivateKey):
                jwk = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
                jwk["alg"] = "RS256"
            else:
                jwk = json.loads(ECAlgorithm.to_jwk(key.public_key()))
                jwk["alg"] = "ES256"
            out.append({**jwk, "kid": kid, "use": "sig"})
        return {"keys": out}

    def public_pem(self, kid: str = "rsa-1") -> bytes:
        return (
            self.keys[kid]
            .public_key()
            .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        )

    def claims(self, **overrides: Any) -> dict[str, Any]:
        now = int(time.time())
        base: dict[str, Any] = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": "user-1",
            "iat": now,
            "exp": now + 600,
            "tenant_id": TENANT,
            "roles": ["admin"],
        }
        base.update(overrides)
        return {k: v for k, v in base.items() if v is not None}

    def token(self, kid: str = "rsa-1", alg: str | None = None, **overrides: Any) -> str:
        key = self.keys[kid]
        alg = alg or ("RS256" if isinstance(key, rsa.RSAPrivateKey) else "ES256")
        return jwt.encode(self.claims(**overrides), key, algorithm=alg, headers={"kid": kid})

    def rotate(self, kid: str) -> None:
        """A new signing key, published alongside the old ones."""
        self.keys[kid] = ec.generate_private_key(ec.SECP256R1())
        self.published.append(kid)


class JwksServer:
    """The identity provider's JWKS endpoint on loopback (a real HTTP server in a thread)."""

    def __init__(self, idp: IdentityProvider) -> None:
        self.idp = idp
        self.requests = 0
        self.failing = False
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.requests += 1
                if outer.failing:
                    self.send_error(503)
                    return
                body = json.dumps(outer.idp.jwks()).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/.well-known/jwks.json"

    @contextlib.contextmanager
    def running(self) -> Iterator[JwksServer]:
        thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._server.shutdown()
            self._server.server_close()
            thread.join()


def write_private_key(path: Path) -> Path:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path.write_bytes(pem)
    path.chmod(0o600)
    return path


def jwt_settings(jwks_url: str, internal_key: Path | None = None, **kw: Any) -> AuthSettings:
    return AuthSettings(
        mode="jwt",
        jwks_url=jwks_url,
        issuer=ISSUER,
        audience=AUDIENCE,
        internal_key_file=str(internal_key or ""),
        jwks_min_refetch_s=kw.pop("jwks_min_refetch_s", 0.0),
        **kw,
    )


def who() -> bytes:
    p = context.principal()
    assert p is not None, "no principal bound inside the handler"
    ctx = context.current()
    assert ctx is not None and ctx.tenant_id
    return f"{p.subject}|{p.tenant_id}|{','.join(sorted(p.roles))}|{p.kind}|{ctx.tenant_id}".encode()


class Probe:
    """One method per permission (and one the policy does not list); ``Forward`` calls ``Read``
    on the next hop, as the gateway calls the services."""

    def __init__(self, next_hop: ChannelPool | None = None) -> None:
        self.next_hop = next_hop

    async def unary(self, _request: bytes, _ctx: grpc.aio.ServicerContext) -> bytes:
        return who()

    async def manage(self, _request: bytes, _ctx: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
        yield who()

    async def call(
        self, requests: AsyncIterator[bytes], _ctx: grpc.aio.ServicerContext
    ) -> AsyncIterator[bytes]:
        async for _ in requests:
            yield who()

    async def forward(self, request: bytes, _ctx: grpc.aio.ServicerContext) -> bytes:
        assert self.next_hop is not None
        async with self.next_hop.stream() as ch:
            return await ch.unary_unary(f"/{SERVICE}/Read")(request)  # type: ignore[no-any-return]

    def add_to(self, server: grpc.aio.Server) -> None:
        handlers = {
            "Read": grpc.unary_unary_rpc_method_handler(self.unary),
            "Write": grpc.unary_unary_rpc_method_handler(self.unary),
            "Unlisted": grpc.unary_unary_rpc_method_handler(self.unary),
            "Manage": grpc.unary_stream_rpc_method_handler(self.manage),
            "Call": grpc.stream_stream_rpc_method_handler(self.call),
            "Forward": grpc.unary_unary_rpc_method_handler(self.forward),
        }
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))


def probe_host(auth: Auth, probe: Probe | None = None) -> ServiceHost:
    probe = probe or Probe()
    return ServiceHost(
        ServiceSettings(),
        [ServiceBinding(SERVICE, probe.add_to)],
        interceptors=[auth.server_interceptor(POLICY)],
    )


def edge_auth(settings: AuthSettings, store: ApiKeyStore | None = None, edge: bool = False) -> Auth:
    return build_auth(settings, api_keys=store, issue_internal_tokens=edge)


def md(authorization: str | None, tenant: str = TENANT) -> tuple[tuple[str, str], ...]:
    out = [("x-tenant-id", tenant), ("x-call-id", "call-1")]
    if authorization is not None:
        out.append(("authorization", authorization))
    return tuple(out)


async def invoke(ch: grpc.aio.Channel, method: str, metadata: tuple[tuple[str, str], ...]) -> bytes:
    """One call of ``method`` (any kind); the first response."""
    path = f"/{SERVICE}/{method}"
    if method == "Manage":
        return [r async for r in ch.unary_stream(path)(b"x", metadata=metadata)][0]
    if method == "Call":
        return [r async for r in ch.stream_stream(path)(iter([b"x"]), metadata=metadata)][0]
    return await ch.unary_unary(path)(b"x", metadata=metadata)  # type: ignore[no-any-return]
