"""TLS and mTLS for every gRPC server and channel of the mesh (settings ``VOICEAI_TLS_*``).

Modes (``VOICEAI_TLS``): ``mtls`` (the default) — servers present their certificate, services
behind the edge require a client certificate signed by the mesh CA, and every client presents
its own; ``tls`` — server certificates only; ``off`` — plaintext, only when asked for by name,
and logged as a warning at start.

Identities: a certificate names its service as a SPIFFE-style URI SAN ``spiffe://voiceai/<svc>``
(or, failing that, its CN). Clients check the server's identity too: a channel to ``stt`` verifies
the server's certificate against the name ``stt`` whatever address discovery gave, so a
certificate for another service is refused at the handshake.

Rotation: server credentials are dynamic (``grpc.dynamic_ssl_server_credentials``): grpc asks
``CertificateFiles.fetch`` at each new handshake, which reloads the pair when the files changed
(stat only otherwise); open connections and streams keep the session they have. Client channels
are built by ``ChannelFactory``, whose ``generation`` moves when the client's files change, so a
``ChannelPool`` opens new streams on fresh channels and lets old ones finish.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Literal

import grpc
import grpc.aio
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from prometheus_client import Counter, Gauge
from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

log = logging.getLogger(__name__)

SPIFFE_PREFIX = "spiffe://voiceai/"
# For alerts: a certificate about to expire means rotation stopped (cert-manager, the mount).
CERT_EXPIRY = Gauge(
    "voiceai_tls_certificate_expiry_timestamp_seconds", "When the certificate this process presents expires"
)
CERT_RELOADS = Counter("voiceai_tls_certificate_reloads_total", "Certificates reloaded after a rotation")
TlsMode = Literal["mtls", "tls", "off"]
_MODES = {"mtls": "mtls", "on": "mtls", "tls": "tls", "off": "off"}


class TlsSettings(BaseSettings):
    """Where this process's certificate, key and trusted CA are, and which mode it runs in."""

    model_config = SettingsConfigDict(env_prefix="VOICEAI_TLS_", extra="ignore", populate_by_name=True)

    mode: str = Field(
        default="mtls", validation_alias=AliasChoices("VOICEAI_TLS", "VOICEAI_TLS_MODE", "mode")
    )
    cert_file: str = ""
    key_file: str = ""
    # The CA that signs the mesh's certificates: servers we dial and clients that dial us.
    ca_file: str = ""
    # Only when client certificates come from another CA than server certificates.
    client_ca_file: str = ""
    # Edge clients (voiceai call): the name checked in the gateway's certificate, when the
    # address dialled is not in it (e.g. an IP behind a load balancer).
    server_name: str = ""
    # A plaintext port serving only grpc.health.v1 (kubelet's gRPC probes speak no TLS);
    # -1 = none. The API and reflection are never served there.
    health_port: int = -1


@dataclass(frozen=True)
class TlsConfig:
    """Checked TLS settings: the mode and the files (all present unless the mode is off)."""

    mode: TlsMode
    cert_file: Path | None = None
    key_file: Path | None = None
    ca_file: Path | None = None
    client_ca_file: Path | None = None
    server_name: str = ""
    health_port: int = -1

    @property
    def enabled(self) -> bool:
        """Whether this process speaks TLS at all."""
        return self.mode != "off"

    @property
    def mutual(self) -> bool:
        """Whether peers present and check client certificates."""
        return self.mode == "mtls"

    @classmethod
    def plaintext(cls) -> TlsConfig:
        """TLS off (tests that exercise something else, and ``VOICEAI_TLS=off``)."""
        return cls("off")

    @classmethod
    def from_settings(cls, settings: TlsSettings, *, edge_client: bool = False) -> TlsConfig:
        """Validate ``settings``: a mode we know and, unless off, readable files for each setting.
        ``edge_client`` (voiceai call): only the CA is needed; a certificate is sent if given."""
        mode = _MODES.get(settings.mode.strip().lower())
        if mode is None:
            raise ValueError(f"VOICEAI_TLS must be one of mtls, tls or off (got {settings.mode!r})")
        if mode == "off":
            return cls("off", health_port=settings.health_port)
        if edge_client and not (settings.cert_file and settings.key_file):
            mode = "tls"
        files = {
            "VOICEAI_TLS_CA_FILE": settings.ca_file,
            **(
                {}
                if mode == "tls" and edge_client
                else {"VOICEAI_TLS_CERT_FILE": settings.cert_file, "VOICEAI_TLS_KEY_FILE": settings.key_file}
            ),
        }
        missing = [name for name, value in files.items() if not value]
        if missing:
            one = len(missing) == 1
            raise ValueError(
                f"TLS is on (VOICEAI_TLS={settings.mode}; mtls is the default) but {', '.join(missing)}"
                f" {'is' if one else 'are'} not set: point {'it' if one else 'them'} at PEM files (make run"
                " creates dev ones under var/tls), or set VOICEAI_TLS=off for plaintext"
            )
        for name, value in [*files.items(), ("VOICEAI_TLS_CLIENT_CA_FILE", settings.client_ca_file)]:
            if value and not os.access(value, os.R_OK):
                raise ValueError(f"{name}={value}: the file does not exist or is not readable")
        return cls(
            mode,  # type: ignore[arg-type]
            Path(settings.cert_file) if settings.cert_file else None,
            Path(settings.key_file) if settings.key_file else None,
            Path(settings.ca_file),
            Path(settings.client_ca_file) if settings.client_ca_file else None,
            settings.server_name,
            settings.health_port,
        )


@cache
def process_tls() -> TlsConfig:
    """This process's TLS configuration, read from the environment once (the default of
    ``ServiceHost`` and ``ChannelPool`` when none is passed in). Plaintext is logged loudly."""
    config = TlsConfig.from_settings(TlsSettings())
    if not config.enabled:
        log.warning(
            "tls: VOICEAI_TLS=off: gRPC servers and channels are PLAINTEXT; peers are not"
            " authenticated and traffic can be read on the network (local development only)"
        )
    return config


def _stamp(paths: Sequence[Path]) -> tuple[tuple[int, int, int], ...]:
    stamps = []
    for path in paths:
        try:
            st = path.stat()  # follows symlinks: Kubernetes swaps a mounted secret's link target
            stamps.append((st.st_ino, st.st_mtime_ns, st.st_size))
        except OSError:
            stamps.append((0, 0, 0))
    return tuple(stamps)


@dataclass(frozen=True)
class KeyPair:
    """One certificate chain, its private key and the CA bundle, as PEM bytes."""

    cert: bytes
    key: bytes
    ca: bytes
    client_ca: bytes

    def identity(self) -> str:
        """The identity the certificate names (for logs)."""
        return identity_of_certificate(self.cert) if self.cert else "(no certificate)"


def load_pair(config: TlsConfig) -> KeyPair:
    """Read and check the files: the key must belong to the certificate."""
    assert config.ca_file
    ca = config.ca_file.read_bytes()
    client_ca = config.client_ca_file.read_bytes() if config.client_ca_file else ca
    x509.load_pem_x509_certificates(ca)  # a CA file that does not parse fails here, not at a handshake
    if config.cert_file is None or config.key_file is None:  # an edge client with the CA only
        return KeyPair(b"", b"", ca, client_ca)
    cert = config.cert_file.read_bytes()
    key = config.key_file.read_bytes()
    leaf = x509.load_pem_x509_certificate(cert)
    private = serialization.load_pem_private_key(key, password=None)
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    if leaf.public_key().public_bytes(
        serialization.Encoding.DER, public
    ) != private.public_key().public_bytes(serialization.Encoding.DER, public):
        raise ValueError(f"{config.key_file} is not the private key of {config.cert_file}")
    return KeyPair(cert, key, ca, client_ca)


class CertificateFiles:
    """The current pair from ``config``'s files, reloaded when they change (rotation)."""

    def __init__(self, config: TlsConfig) -> None:
        self._config = config
        self._paths = [
            p for p in (config.cert_file, config.key_file, config.ca_file, config.client_ca_file) if p
        ]
        self._stamp = _stamp(self._paths)
        self.pair = load_pair(config)
        self.generation = 0
        self.reloads = 0
        self._export_expiry()

    def refresh(self) -> bool:
        """Reload when the files changed; True when a new pair is in use. A half-written or
        mismatched pair (the cert updated before its key) keeps the old one until the next try."""
        stamp = _stamp(self._paths)
        if stamp == self._stamp:
            return False
        try:
            pair = load_pair(self._config)
        except (OSError, ValueError) as error:
            log.warning("tls: new certificate files not usable yet, keeping the current ones (%s)", error)
            return False
        self._stamp = stamp
        self.pair = pair
        self.generation += 1
        self.reloads += 1
        CERT_RELOADS.inc()
        self._export_expiry()
        log.info("tls: certificate reloaded for %s (generation %d)", pair.identity(), self.generation)
        return True

    def _export_expiry(self) -> None:
        if self.pair.cert:
            CERT_EXPIRY.set(x509.load_pem_x509_certificate(self.pair.cert).not_valid_after_utc.timestamp())

    def fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """grpc's per-handshake fetcher: a new configuration after a rotation, else None (keep)."""
        try:
            if not self.refresh():
                return None
            return _server_configuration(self.pair)
        except Exception:  # an exception here would fail the handshake: log and keep the old pair
            log.exception("tls: reloading the certificate failed; keeping the current one")
            return None


def _server_configuration(pair: KeyPair) -> grpc.ServerCertificateConfiguration:
    return grpc.ssl_server_certificate_configuration([(pair.key, pair.cert)], pair.client_ca)


def server_credentials(files: CertificateFiles, *, require_client_cert: bool) -> grpc.ServerCredentials:
    """Credentials that follow ``files`` through rotation. With ``require_client_cert`` a
    handshake without a client certificate signed by the CA fails (grpc logs why)."""
    return grpc.dynamic_ssl_server_credentials(
        _server_configuration(files.pair), files.fetch, require_client_authentication=require_client_cert
    )


class ChannelFactory:
    """Builds client channels: plaintext, TLS, or mTLS with this process's certificate."""

    def __init__(self, config: TlsConfig) -> None:
        self.config = config
        self._files = CertificateFiles(config) if config.enabled else None
        self._creds: grpc.ChannelCredentials | None = None
        self._creds_generation = -1

    @property
    def generation(self) -> int:
        """Moves when the certificate files changed: channels built earlier use the old pair."""
        if self._files is None:
            return 0
        self._files.refresh()
        return self._files.generation

    def credentials(self) -> grpc.ChannelCredentials | None:
        """The channel credentials for the current pair (None when TLS is off)."""
        if self._files is None:
            return None
        generation = self.generation
        if self._creds is None or generation != self._creds_generation:
            pair = self._files.pair
            if self.config.mutual:
                self._creds = grpc.ssl_channel_credentials(pair.ca, pair.key, pair.cert)
            else:
                self._creds = grpc.ssl_channel_credentials(pair.ca)
            self._creds_generation = generation
        return self._creds

    def channel(
        self,
        address: str,
        service: str,
        *,
        options: Sequence[tuple[str, object]] = (),
        interceptors: Sequence[grpc.aio.ClientInterceptor] = (),
    ) -> grpc.aio.Channel:
        """A channel to ``address``, where ``service`` must answer: its certificate is checked
        against that name (``ssl_target_name_override``), not against the address."""
        creds = self.credentials()
        if creds is None:
            return grpc.aio.insecure_channel(address, options=list(options), interceptors=list(interceptors))
        opts = [*options, ("grpc.ssl_target_name_override", service)]
        return grpc.aio.secure_channel(address, creds, options=opts, interceptors=list(interceptors))


@cache
def process_channels() -> ChannelFactory:
    """The process's ``ChannelFactory`` (from ``process_tls``)."""
    return ChannelFactory(process_tls())


def edge_channel(
    address: str, config: TlsConfig, options: Sequence[tuple[str, object]] = ()
) -> grpc.aio.Channel:
    """A channel to an edge API (the gateway's Converse): the server's certificate is checked
    against the address dialled, or ``VOICEAI_TLS_SERVER_NAME`` when set."""
    creds = ChannelFactory(config).credentials()
    if creds is None:
        return grpc.aio.insecure_channel(address, options=list(options))
    opts = [
        *options,
        *([("grpc.ssl_target_name_override", config.server_name)] if config.server_name else []),
    ]
    return grpc.aio.secure_channel(address, creds, options=opts)


def edge_client_tls(default_ca: Path = Path("var/tls/ca.pem")) -> TlsConfig:
    """TLS for a command-line caller of the edge: ``VOICEAI_TLS_*``, with the local mesh's dev
    CA (``make run`` writes it) when no CA file is configured."""
    settings = TlsSettings()
    if not settings.ca_file and default_ca.exists():
        settings.ca_file = str(default_ca)
    return TlsConfig.from_settings(settings, edge_client=True)


def edge_channel_credentials(config: TlsConfig) -> grpc.ChannelCredentials | None:
    """Credentials for a caller of an edge API (voiceai call, the REST front dialling
    tenant_svc): the CA, plus this process's certificate in mTLS mode. None when TLS is off."""
    return ChannelFactory(config).credentials()


def tenant_channel_credentials(
    config: TlsConfig | None = None,
) -> tuple[grpc.ChannelCredentials | None, list[tuple[str, str]]]:
    """For the REST front (#18): ``(credentials, options)`` to dial tenant_svc. Its certificate
    must carry the identity ``rest`` (tenant_svc admits only ``gateway`` and ``rest``)."""
    config = config or process_tls()
    return edge_channel_credentials(config), (
        [("grpc.ssl_target_name_override", "tenant")] if config.enabled else []
    )


def identity_of_certificate(pem: bytes) -> str:
    """The service a PEM certificate names: its ``spiffe://voiceai/<svc>`` URI SAN, else its CN."""
    cert = x509.load_pem_x509_certificate(pem)
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        for uri in sans.get_values_for_type(x509.UniformResourceIdentifier):
            if uri.startswith(SPIFFE_PREFIX):
                return uri[len(SPIFFE_PREFIX) :]
    except x509.ExtensionNotFound:
        pass
    names = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    value = names[0].value if names else ""
    return value if isinstance(value, str) else value.decode()


def peer_identity(sctx: grpc.aio.ServicerContext) -> str | None:
    """The verified identity of the peer on this RPC's connection: its SPIFFE id under
    ``spiffe://voiceai/``, else its certificate's CN; None on a plaintext connection or when the
    peer presented no certificate. grpc fills these only from a certificate it verified."""
    auth = sctx.auth_context()
    for spiffe in auth.get("peer_spiffe_id", ()):
        text = spiffe.decode(errors="replace")
        return text[len(SPIFFE_PREFIX) :] if text.startswith(SPIFFE_PREFIX) else f"(foreign {text})"
    for name in auth.get("x509_common_name", ()):
        return name.decode(errors="replace")
    return None


def is_tls(sctx: grpc.aio.ServicerContext) -> bool:
    """Whether this RPC arrived over TLS."""
    return sctx.auth_context().get("transport_security_type", [b""])[0] == b"ssl"
