"""LiveKit credentials are all required and never shown; transfer requests are built for
LiveKit SIP (``tel:`` for E.164 numbers, ``sip:`` URIs kept, a dial tone while it rings)."""

from __future__ import annotations

import pytest
from livekit import api

from gateway.livekit.settings import LiveKitCredentials, MissingCredential
from gateway.livekit.sip_control import transfer_request, transfer_target

SECRET = "a-secret-that-must-never-be-printed"


@pytest.mark.parametrize(
    ("missing", "given"),
    [
        ("LIVEKIT_URL", {"api_key": "APIkey", "api_secret": SECRET}),
        ("LIVEKIT_API_KEY", {"url": "wss://lk.example.com", "api_secret": SECRET}),
        ("LIVEKIT_API_SECRET", {"url": "wss://lk.example.com", "api_key": "APIkey"}),
        ("LIVEKIT_API_KEY", {"url": "wss://lk.example.com", "api_key": "  ", "api_secret": SECRET}),
    ],
)
def test_each_missing_credential_is_named(
    missing: str, given: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("LIVEKIT_URL", "LIVEKIT_API_KEY", "LIVEKIT_API_SECRET"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(MissingCredential) as error:
        LiveKitCredentials(**given).require()  # type: ignore[arg-type]
    assert str(error.value).startswith(f"{missing} is not set")
    assert SECRET not in str(error.value)


def test_credentials_come_from_livekits_own_variables_and_hide_the_secret(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LIVEKIT_URL", "wss://lk.example.com")
    monkeypatch.setenv("LIVEKIT_API_KEY", "APIkey")
    monkeypatch.setenv("LIVEKIT_API_SECRET", SECRET)
    creds = LiveKitCredentials().require()
    assert creds.url == "wss://lk.example.com" and creds.api_secret.get_secret_value() == SECRET
    assert SECRET not in repr(creds) and SECRET not in str(creds)


def test_a_url_that_is_no_url_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(MissingCredential, match="LIVEKIT_URL must be"):
        LiveKitCredentials(url="lk.example.com", api_key="k", api_secret=SECRET).require()  # type: ignore[arg-type]


def test_transfer_requests() -> None:
    request = transfer_request("room-1", "sip_+14155550100", "+14155550199")
    assert isinstance(request, api.TransferSIPParticipantRequest)
    assert (request.room_name, request.participant_identity) == ("room-1", "sip_+14155550100")
    assert request.transfer_to == "tel:+14155550199" and request.play_dialtone
    assert transfer_target("sip:desk@pbx.example.com") == "sip:desk@pbx.example.com"
    assert transfer_target(" tel:+14155550199 ") == "tel:+14155550199"
    for bad in ("", "14155550199", "+1-415-555", "+1415555019912345678", "desk@pbx"):
        with pytest.raises(ValueError, match="E.164"):
            transfer_target(bad)
