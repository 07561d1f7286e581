"""deploy/livekit: the LiveKit server and LiveKit SIP examples agree with each other and with
the gateway's worker (one Redis, one API key pair, SIP on 5060 with its RTP range apart from the
server's WebRTC range), and hold placeholders, never secrets."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from gateway.livekit.settings import LiveKitCredentials

CONFIGS = Path(__file__).resolve().parents[2] / "deploy" / "livekit"
PLACEHOLDER = re.compile(r"<[a-z0-9-]+>")


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((CONFIGS / name).read_text())
    return data


def test_server_and_sip_share_redis_and_the_key_pair() -> None:
    server, sip = load("livekit.yaml"), load("sip.yaml")
    assert server["redis"]["address"] == sip["redis"]["address"] == "<redis-host>:6379"
    assert server["keys"] == {sip["api_key"]: sip["api_secret"]}
    assert sip["ws_url"] == f"ws://<livekit-host>:{server['port']}"
    # The gateway reads the same URL and key pair, under LiveKit's own variable names.
    assert set(LiveKitCredentials.model_fields) == {"url", "api_key", "api_secret"}


def test_sip_listens_on_5060_and_its_rtp_range_is_apart_from_webrtc() -> None:
    server, sip = load("livekit.yaml"), load("sip.yaml")
    assert sip["sip_port"] == 5060
    low, high = (int(p) for p in sip["rtp_port"].split("-"))
    rtc = server["rtc"]
    assert 1024 < low < high and 1024 < rtc["port_range_start"] < rtc["port_range_end"]
    assert high < rtc["port_range_start"] or low > rtc["port_range_end"]
    assert rtc["tcp_port"] not in range(low, high + 1) and sip["sip_port"] != server["port"]


def test_only_placeholders_stand_for_secrets_and_hosts() -> None:
    for path in CONFIGS.glob("*.yaml"):
        text = path.read_text()
        assert "PRIVATE KEY" not in text
        for line in text.splitlines():
            if re.search(
                r"(secret|password|api_key|address|ws_url)\s*:", line
            ) and not line.lstrip().startswith("#"):
                assert PLACEHOLDER.search(line), f"{path.name}: {line.strip()!r} is not a <placeholder>"
