"""Deepgram over wss:// uses the one TLS context installed at start (common.deepgram_tls).

The double serves TLS with a certificate made here. A context that trusts it is installed:
the real SDK connects and the words come back. The system's default context is installed
instead: the same connection fails certificate verification, so the connection really went
through the installed context (and not a fresh default one per connection).
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from pathlib import Path

import grpc
import grpc.aio
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from common import deepgram_tls
from common.providers import EnvKeySource
from stt_svc.providers.deepgram_nova import DeepgramRecognizer
from tests.doubles.deepgram_api import DeepgramListenDouble
from tests.integration.test_stt_deepgram import AUDIO, assert_heard_once, config, dg_config, recognize, stt


def _certificate(tmp: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "deepgram-double")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


@pytest.fixture
def tls_files(tmp_path: Path):  # type: ignore[no-untyped-def]
    before = deepgram_tls.installed_context(deepgram_tls.SDK_MODULES[0])
    yield _certificate(tmp_path)
    if before is not None:
        deepgram_tls.install(before)  # leave the process as other tests found it


def _server_context(cert: Path, key: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    return ctx


async def test_wss_streams_use_the_installed_context(tls_files: tuple[Path, Path]) -> None:
    cert, key = tls_files
    trusting = ssl.create_default_context(cafile=str(cert))
    async with DeepgramListenDouble(tls=_server_context(cert, key)) as dg:
        assert dg.url.startswith("wss://")
        recognizer = DeepgramRecognizer(dg_config(dg.url), EnvKeySource({}))
        assert deepgram_tls.install(trusting) is trusting
        for module in deepgram_tls.SDK_MODULES:
            assert deepgram_tls.installed_context(module) is trusting
        async with stt(recognizer) as addr:
            responses = await recognize(addr, AUDIO, config(providers=["deepgram"]))
        assert_heard_once(responses)
        assert len(dg.requests) == 1 and dg.requests[0].status == 101


async def test_a_context_that_does_not_trust_the_server_is_the_one_refused(
    tls_files: tuple[Path, Path],
) -> None:
    cert, key = tls_files
    async with DeepgramListenDouble(tls=_server_context(cert, key)) as dg:
        recognizer = DeepgramRecognizer(dg_config(dg.url), EnvKeySource({}))
        deepgram_tls.install(ssl.create_default_context())  # the system CAs: not our certificate
        async with stt(recognizer) as addr:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await recognize(addr, AUDIO, config(providers=["deepgram"]))
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        assert not dg.requests  # refused during the TLS handshake, before any HTTP


def test_install_is_idempotent_and_plain_ws_is_untouched() -> None:
    ctx = deepgram_tls.install()
    assert ctx is not None and deepgram_tls.install() is ctx
    seen: list[dict[str, object]] = []

    def fake(uri: str, **kw: object) -> None:
        seen.append(kw)

    wrapped = deepgram_tls._wrap(fake, ctx)
    wrapped("ws://10.0.0.1:8080/v1/listen")
    wrapped("wss://api.deepgram.com/v1/listen")
    wrapped("wss://api.deepgram.com/v1/listen", ssl=False)
    assert seen == [{}, {"ssl": ctx}, {"ssl": False}]
