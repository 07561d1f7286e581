"""TLS settings and certificate files: what is refused at start, and how a rotation is picked up."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from cryptography import x509

from common.dev_ca import Authority, ensure_dev_pki, write_private
from common.tls import CertificateFiles, ChannelFactory, TlsConfig, TlsSettings, identity_of_certificate


def test_tls_is_on_by_default_and_missing_files_are_named() -> None:
    with pytest.raises(
        ValueError, match="VOICEAI_TLS_CA_FILE, VOICEAI_TLS_CERT_FILE, VOICEAI_TLS_KEY_FILE are not set"
    ) as info:
        TlsConfig.from_settings(TlsSettings(mode="mtls"))
    assert "VOICEAI_TLS=off" in str(info.value)
    with pytest.raises(ValueError, match="one of mtls, tls or off"):
        TlsConfig.from_settings(TlsSettings(mode="maybe"))
    assert not TlsConfig.from_settings(TlsSettings(mode="off")).enabled


def test_the_environment_names_the_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VOICEAI_TLS", "off")
    assert TlsSettings().mode == "off"
    monkeypatch.delenv("VOICEAI_TLS")
    monkeypatch.delenv("VOICEAI_TLS_MODE", raising=False)
    assert TlsSettings().mode == "mtls"


def test_an_unreadable_file_is_named(tmp_path: Path) -> None:
    pki = ensure_dev_pki(tmp_path)
    paths = pki.identities["stt"]
    settings = TlsSettings(
        mode="mtls", cert_file=str(paths.cert), key_file=str(paths.key), ca_file=str(tmp_path / "nope.pem")
    )
    with pytest.raises(ValueError, match=r"VOICEAI_TLS_CA_FILE=.*nope.pem"):
        TlsConfig.from_settings(settings)


def test_dev_pki_names_each_identity_and_is_reused(tmp_path: Path) -> None:
    pki = ensure_dev_pki(tmp_path)
    for identity, paths in pki.identities.items():
        assert identity_of_certificate(paths.cert.read_bytes()) == identity
        assert paths.key.stat().st_mode & 0o077 == 0
    again = ensure_dev_pki(tmp_path)
    assert again.identities["stt"].cert.read_bytes() == pki.identities["stt"].cert.read_bytes()
    assert pki.env_for("llm")["VOICEAI_TLS_CERT_FILE"].endswith("llm.pem")


def test_a_rotation_is_picked_up_once_the_pair_matches(tmp_path: Path) -> None:
    pki = ensure_dev_pki(tmp_path)
    config = TlsConfig("mtls", pki.identities["stt"].cert, pki.identities["stt"].key, pki.ca_cert)
    files = CertificateFiles(config)
    assert files.fetch() is None  # unchanged: grpc keeps the current pair
    authority = Authority(*_ca(tmp_path))
    cert, key = authority.issue("stt")
    write_private(config.cert_file, cert)  # type: ignore[arg-type]
    # The certificate changed before its key: the old pair stays in use.
    assert files.fetch() is None and files.generation == 0
    write_private(config.key_file, key)  # type: ignore[arg-type]
    assert files.fetch() is not None and files.generation == 1 and files.pair.cert == cert
    from prometheus_client import REGISTRY

    expiry = REGISTRY.get_sample_value("voiceai_tls_certificate_expiry_timestamp_seconds")
    assert expiry == x509.load_pem_x509_certificate(cert).not_valid_after_utc.timestamp()
    factory = ChannelFactory(config)
    before = factory.generation
    write_private(config.cert_file, authority.issue("stt")[0])  # type: ignore[arg-type]
    os.utime(config.cert_file)  # type: ignore[arg-type]
    assert factory.generation == before  # mismatched again: no new client credentials


def _ca(directory: Path) -> tuple[object, object]:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key((directory / "ca-key.pem").read_bytes(), None)
    return key, x509.load_pem_x509_certificate((directory / "ca.pem").read_bytes())
