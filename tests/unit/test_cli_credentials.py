"""The credential ``voiceai call`` sends: a token or API key from the environment, else (local
dev mesh) a dev token minted with the mesh's own key, never with a new one."""

from __future__ import annotations

from pathlib import Path

from common.auth import AGENT, AuthSettings, build_auth, dev_signing_key
from gateway.cli.credentials import CallerCredentials, authorization_for


def test_a_token_or_api_key_from_the_environment_wins(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    dev = AuthSettings(dev_key_dir=tmp_path)
    monkeypatch.setenv("VOICEAI_TOKEN", "eyJ.from.env")
    assert authorization_for("acme", auth=dev) == "Bearer eyJ.from.env"
    monkeypatch.delenv("VOICEAI_TOKEN")
    monkeypatch.setenv("VOICEAI_API_KEY", "vai_abc")
    assert authorization_for("acme", auth=dev) == "ApiKey vai_abc"
    assert "vai_abc" not in repr(CallerCredentials())  # a secret, never printed


async def test_dev_mode_mints_a_call_token_with_the_mesh_key(tmp_path: Path) -> None:
    settings = AuthSettings(dev_key_dir=tmp_path)
    dev_signing_key(tmp_path)  # what the services do when they start
    header = authorization_for("acme", CallerCredentials(), settings)
    assert header.startswith("Bearer ")
    principal = await build_auth(settings).authenticator.authenticate(header)
    assert principal.tenant_id == "acme" and AGENT in principal.roles


def test_no_key_no_token_and_no_new_key(tmp_path: Path) -> None:
    empty = CallerCredentials(token=None, api_key=None)
    assert authorization_for("acme", empty, AuthSettings(dev_key_dir=tmp_path / "none")) == ""
    assert not (tmp_path / "none").exists()  # a key of our own would only make rejected tokens
    dev_signing_key(tmp_path)
    jwt_mode = AuthSettings(mode="jwt", dev_key_dir=tmp_path, issuer="idp", public_key_pem="x")
    assert authorization_for("acme", empty, jwt_mode) == ""
