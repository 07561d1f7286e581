"""LiveKit settings: on only with all three credentials; the secret never shows."""

from __future__ import annotations

import pytest

from tenant_svc.telephony import LiveKitSettings
from tenant_svc.telephony.errors import LiveKitRefused, LiveKitUnavailable, translate


def test_provisioning_is_on_only_with_url_key_and_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("LIVEKIT_URL", "LIVEKIT_API_KEY", "LIVEKIT_API_SECRET"):
        monkeypatch.delenv(name, raising=False)
    assert LiveKitSettings().missing() == ["LIVEKIT_URL", "LIVEKIT_API_KEY", "LIVEKIT_API_SECRET"]
    monkeypatch.setenv("LIVEKIT_URL", "https://lk.example.com")
    monkeypatch.setenv("LIVEKIT_API_KEY", "APIkey")
    assert LiveKitSettings().missing() == ["LIVEKIT_API_SECRET"] and not LiveKitSettings().enabled
    monkeypatch.setenv("LIVEKIT_API_SECRET", "s3cret-value")
    settings = LiveKitSettings()
    assert settings.enabled and "s3cret-value" not in repr(settings) and "s3cret-value" not in str(settings)


def test_tags_cannot_break_the_naming_scheme() -> None:
    with pytest.raises(ValueError):
        LiveKitSettings(tag="voice:ai")


def test_livekit_errors_map_to_refused_or_unavailable() -> None:
    from livekit.api import ServerError

    busy = translate(
        ServerError(
            "failed_precondition",
            "sip status: 486",
            status=412,
            metadata={"sip_status_code": "486", "sip_status": "Busy Here"},
        ),
        "call",
    )
    assert isinstance(busy, LiveKitRefused) and (busy.sip_status_code, busy.sip_status) == (486, "Busy Here")
    assert isinstance(translate(ServerError("internal", "boom", status=500), "x"), LiveKitUnavailable)
    assert isinstance(translate(ConnectionRefusedError(), "x"), LiveKitUnavailable)
    creds = translate(ServerError("unauthenticated", "invalid token", status=401), "list trunks")
    assert isinstance(creds, LiveKitRefused) and "LIVEKIT_API_SECRET" in str(creds)
