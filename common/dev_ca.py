"""A local certificate authority for dev mode: one CA and a certificate per mesh service.

``make run`` (``gateway.mesh``) calls ``ensure_dev_pki`` before starting the services, so the
local mesh runs with mTLS like a deployment does. Every certificate carries its service's
identity twice, as a SPIFFE-style URI SAN ``spiffe://voiceai/<service>`` and as its CN, plus the
DNS names ``<service>`` and ``localhost`` and the IP ``127.0.0.1`` (so ``grpcurl -cacert`` to
``localhost:50060`` verifies). Keys are EC P-256, written 0600 in a 0700 directory; a set that is
missing, unreadable or within a day of expiry is issued again. Dev only: a deployment's
certificates come from cert-manager (``deploy/components/tls``).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

log = logging.getLogger(__name__)

SPIFFE_PREFIX = "spiffe://voiceai/"
# The mesh's identities: the four services, tenant_svc, the REST front, and an operator
# identity for grpcurl against services that require a client certificate.
DEV_IDENTITIES = ("gateway", "stt", "llm", "tts", "tenant", "rest", "operator")
CA_CERT = "ca.pem"
CA_KEY = "ca-key.pem"
RENEW_BEFORE = dt.timedelta(days=1)


@dataclass(frozen=True)
class CertPaths:
    """Where one identity's certificate and private key are."""

    cert: Path
    key: Path


@dataclass(frozen=True)
class DevPki:
    """The dev CA's certificate and each identity's files."""

    ca_cert: Path
    identities: dict[str, CertPaths]

    def env_for(self, identity: str) -> dict[str, str]:
        """The ``VOICEAI_TLS_*`` environment a process with ``identity`` runs with."""
        paths = self.identities[identity]
        return {
            "VOICEAI_TLS": "mtls",
            "VOICEAI_TLS_CERT_FILE": str(paths.cert),
            "VOICEAI_TLS_KEY_FILE": str(paths.key),
            "VOICEAI_TLS_CA_FILE": str(self.ca_cert),
        }


@dataclass(frozen=True)
class Authority:
    """A CA's key and certificate, able to issue leaf certificates (tests make extra ones)."""

    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @classmethod
    def create(cls, name: str = "voiceai dev CA", days: int = 365) -> Authority:
        """A new self-signed CA."""
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(key, hashes.SHA256())
        )
        return cls(key, cert)

    def issue(
        self,
        identity: str,
        *,
        not_before: dt.datetime | None = None,
        not_after: dt.datetime | None = None,
        dns_names: Sequence[str] = (),
    ) -> tuple[bytes, bytes]:
        """``(cert_pem, key_pem)`` for ``identity`` (server and client use)."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        names: list[x509.GeneralName] = [
            x509.UniformResourceIdentifier(SPIFFE_PREFIX + identity),
            *(x509.DNSName(n) for n in (identity, "localhost", *dns_names)),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        ]
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, identity)]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before or now - dt.timedelta(minutes=5))
            .not_valid_after(not_after or now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False,
            )
            .sign(self.key, hashes.SHA256())
        )
        return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)

    @property
    def cert_pem(self) -> bytes:
        """The CA certificate in PEM (what peers trust)."""
        return self.cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` (0600) atomically: readers never see half a key."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _valid(path: Path) -> bool:
    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError):
        return False
    return cert.not_valid_after_utc - RENEW_BEFORE > dt.datetime.now(dt.UTC)


def _load_authority(directory: Path) -> Authority | None:
    if not _valid(directory / CA_CERT):
        return None
    try:
        key = serialization.load_pem_private_key((directory / CA_KEY).read_bytes(), password=None)
    except (OSError, ValueError):
        return None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        return None
    return Authority(key, x509.load_pem_x509_certificate((directory / CA_CERT).read_bytes()))


def ensure_dev_pki(directory: Path, identities: Sequence[str] = DEV_IDENTITIES) -> DevPki:
    """The dev CA and a certificate per identity under ``directory``, created or renewed as needed."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    authority = _load_authority(directory)
    fresh_ca = authority is None
    if authority is None:
        authority = Authority.create()
        write_private(directory / CA_KEY, _key_pem(authority.key))
        write_private(directory / CA_CERT, authority.cert_pem)
        log.warning("tls: created a dev CA in %s (dev mode only)", directory)
    paths: dict[str, CertPaths] = {}
    for identity in identities:
        entry = CertPaths(directory / f"{identity}.pem", directory / f"{identity}-key.pem")
        if fresh_ca or not _valid(entry.cert) or not entry.key.exists():
            cert_pem, key_pem = authority.issue(identity)
            write_private(entry.key, key_pem)
            write_private(entry.cert, cert_pem)
        paths[identity] = entry
    return DevPki(directory / CA_CERT, paths)


def mesh_pki(state_dir: Path, environ: dict[str, str]) -> DevPki | None:
    """For the local launcher: the dev PKI under ``state_dir/tls``, or None when the environment
    says ``VOICEAI_TLS=off`` (the only way to a plaintext mesh; each service then logs a warning)."""
    if environ.get("VOICEAI_TLS", environ.get("VOICEAI_TLS_MODE", "mtls")).strip().lower() == "off":
        return None
    return ensure_dev_pki(state_dir / "tls")
