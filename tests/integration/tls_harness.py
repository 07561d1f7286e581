"""A test PKI (the dev CA code, in a temp dir) and hosts that serve a mesh service's real method
names over mTLS, to test who is admitted: the handshake, the peer identity and the credential."""

from __future__ import annotations

import datetime as dt
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

import grpc
import grpc.aio
from cryptography import x509

from common.auth import AuthSettings, build_auth
from common.dev_ca import Authority, write_private
from common.server import ServiceBinding, ServiceHost
from common.settings import ServiceSettings
from common.tls import TlsConfig

ADMITTED = b"admitted"
IDENTITIES = ("gateway", "stt", "llm", "tts", "tenant", "rest")
# One method per service, with its real full name (the access policy and hop rules apply).
METHODS = {
    "stt": "/voiceai.stt.v1.SpeechToTextService/StreamingRecognize",
    "llm": "/voiceai.llm.v1.LanguageModelService/StreamChat",
    "tts": "/voiceai.tts.v1.TextToSpeechService/StreamingSynthesize",
    "tenant": "/voiceai.tenant.v1.TenantService/GetAgent",
    "gateway": "/voiceai.gateway.v1.CallGatewayService/Converse",
}


@dataclass
class Pki:
    """A CA and files for each identity under ``root``; a rogue CA for wrong-CA cases."""

    root: Path
    ca: Authority
    rogue: Authority

    @classmethod
    def create(cls, root: Path) -> Pki:
        pki = cls(root, Authority.create("test mesh CA"), Authority.create("rogue CA"))
        write_private(root / "ca.pem", pki.ca.cert_pem)
        write_private(root / "rogue-ca.pem", pki.rogue.cert_pem)
        for identity in IDENTITIES:
            pki.write(identity)
        return pki

    def write(
        self, identity: str, *, name: str = "", authority: Authority | None = None, expired: bool = False
    ) -> str:
        """Issue a certificate for ``identity`` into files named ``name`` (default: the identity)."""
        now = dt.datetime.now(dt.UTC)
        window = (
            {"not_before": now - dt.timedelta(days=2), "not_after": now - dt.timedelta(days=1)}
            if expired
            else {}
        )
        cert, key = (authority or self.ca).issue(identity, **window)
        name = name or identity
        write_private(self.root / f"{name}-key.pem", key)
        write_private(self.root / f"{name}.pem", cert)
        return name

    def config(self, name: str, mode: str = "mtls", ca: str = "ca.pem") -> TlsConfig:
        return TlsConfig(
            mode,  # type: ignore[arg-type]
            self.root / f"{name}.pem",
            self.root / f"{name}-key.pem",
            self.root / ca,
        )

    def bytes_of(self, name: str) -> tuple[bytes, bytes]:
        return (self.root / f"{name}.pem").read_bytes(), (self.root / f"{name}-key.pem").read_bytes()


def admission_host(service: str, tls: TlsConfig, extra_methods: tuple[str, ...] = ()) -> ServiceHost:
    """A host serving ``service``'s real method names (answering ``ADMITTED``) with the real
    ServiceHost, TLS and auth: what it refuses, it refuses before any service code runs."""

    async def admitted(_request: bytes, _ctx: grpc.aio.ServicerContext) -> bytes:
        return ADMITTED

    full_name, method = METHODS[service].strip("/").split("/")
    handler = grpc.method_handlers_generic_handler(
        full_name, {name: grpc.unary_unary_rpc_method_handler(admitted) for name in (method, *extra_methods)}
    )
    binding = ServiceBinding(full_name, lambda server: server.add_generic_rpc_handlers((handler,)))
    # The gateway mints call ids; services behind it require one.
    return ServiceHost(
        ServiceSettings(),
        [binding],
        auth=build_auth(AuthSettings()),
        tls=tls,
        require_call_id=service not in {"gateway", "tenant"},
    )


def client_channel(
    address: str, pki: Pki, cert: str | None, *, trust: str = "ca.pem", server_name: str = ""
) -> grpc.aio.Channel:
    """A TLS channel presenting ``cert`` (None: no client certificate), trusting ``trust``."""
    root = (pki.root / trust).read_bytes()
    creds = (
        grpc.ssl_channel_credentials(root, *reversed(pki.bytes_of(cert)))
        if cert
        else grpc.ssl_channel_credentials(root)
    )
    options = [("grpc.ssl_target_name_override", server_name)] if server_name else []
    return grpc.aio.secure_channel(address, creds, options=options)


def served_certificate(port: int, pki: Pki, client: str = "gateway") -> x509.Certificate:
    """The certificate a server presents on a new handshake now (python's ssl, h2 ALPN)."""
    ctx = ssl.create_default_context(cafile=str(pki.root / "ca.pem"))
    ctx.check_hostname = False
    ctx.load_cert_chain(pki.root / f"{client}.pem", pki.root / f"{client}-key.pem")
    ctx.set_alpn_protocols(["h2"])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, ctx.wrap_socket(raw) as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)
