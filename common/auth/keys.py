"""Key material: PEM loading, key ids, and the dev-mode signing key on local disk.

Private keys are loaded into memory and never logged, printed or put in an error message.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

log = logging.getLogger(__name__)

DEV_KEY_NAME = "signing-key.pem"
# Dev mode's internal-token key: a separate key, so a user token can never pass as internal.
DEV_INTERNAL_KEY_NAME = "internal-signing-key.pem"

PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey


def compatible(key: Any, alg: str) -> bool:
    """Whether ``alg`` is a signature algorithm for this kind of public key. Checked before
    verifying, so a token can never make us use a key in an algorithm it was not made for."""
    if isinstance(key, rsa.RSAPublicKey):
        return alg[:2] in ("RS", "PS")
    if isinstance(key, ec.EllipticCurvePublicKey):
        curves = {"ES256": "secp256r1", "ES384": "secp384r1", "ES512": "secp521r1", "ES256K": "secp256k1"}
        return curves.get(alg) == key.curve.name
    if isinstance(key, ed25519.Ed25519PublicKey):
        return alg in ("EdDSA", "Ed25519")
    return False


def load_public_key(pem: bytes) -> PublicKey:
    """A public key from PEM (SubjectPublicKeyInfo); also accepts a certificate's key."""
    if b"BEGIN CERTIFICATE" in pem:
        from cryptography import x509

        key: Any = x509.load_pem_x509_certificate(pem).public_key()
    else:
        key = serialization.load_pem_public_key(pem)
    if not isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey):
        raise ValueError(f"unsupported public key type {type(key).__name__}; use RSA, EC or Ed25519")
    return key


def load_ec_private_key(path: Path, *, strict: bool = False) -> ec.EllipticCurvePrivateKey:
    """The P-256 private key that signs internal tokens (ES256). ``strict`` (the dev key, which
    we create) refuses symlinks and group/other access; a configured key may be a mounted secret
    (Kubernetes mounts those as symlinks, often group-readable), so it only gets a warning."""
    key = serialization.load_pem_private_key(_read_private(path, strict), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise ValueError(f"{path} must hold an EC P-256 private key (internal tokens are ES256)")
    return key


def key_id(public_key: PublicKey) -> str:
    """A stable id for a public key: the SHA-256 of its DER encoding, shortened (kid header)."""
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.urlsafe_b64encode(hashlib.sha256(der).digest()[:12]).decode().rstrip("=")


def public_jwk(public_key: ec.EllipticCurvePublicKey) -> dict[str, str]:
    """The JWK form of an EC public key, with its kid (what a JWKS endpoint would publish)."""
    from jwt.algorithms import ECAlgorithm

    jwk: dict[str, str] = json.loads(ECAlgorithm.to_jwk(public_key))
    return {**jwk, "kid": key_id(public_key), "alg": "ES256", "use": "sig"}


@dataclass(frozen=True)
class SigningKey:
    """An ES256 private key and its kid. ``repr`` never shows the key."""

    private_key: ec.EllipticCurvePrivateKey
    kid: str

    def __repr__(self) -> str:
        return f"SigningKey(kid={self.kid!r})"

    @property
    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self.private_key.public_key()

    @classmethod
    def from_private_key(cls, key: ec.EllipticCurvePrivateKey) -> SigningKey:
        return cls(key, key_id(key.public_key()))


def dev_signing_key(directory: Path, name: str = DEV_KEY_NAME) -> SigningKey:
    """The local mesh's dev key: created once (0600, in a 0700 directory), then shared by every
    process that points at the same directory. Creation is atomic: a process that loses the race
    reads the winner's key, and nobody ever reads a half-written file."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = directory / name
    if not path.exists():
        _create_once(path)
    return SigningKey.from_private_key(load_ec_private_key(path, strict=True))


def _create_once(path: Path) -> None:
    pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)  # fails if another process published first: keep theirs
            log.warning("auth: created a dev signing key in %s (dev mode only)", path.parent)
        except FileExistsError:
            pass
    finally:
        tmp.unlink(missing_ok=True)


def _read_private(path: Path, strict: bool) -> bytes:
    fd = os.open(path, os.O_RDONLY | (os.O_NOFOLLOW if strict else 0))
    with os.fdopen(fd, "rb") as f:
        mode = stat.S_IMODE(os.fstat(f.fileno()).st_mode)
        if strict and mode & (stat.S_IRWXG | stat.S_IRWXO):
            # As ssh does: a key others can read is not a secret any more.
            raise PermissionError(
                f"private key {path} is accessible by other users (mode {mode:04o}); run: chmod 600 {path}"
            )
        if mode & stat.S_IRWXO:
            log.warning("auth: private key %s is readable by every user (mode %04o)", path, mode)
        return f.read()
