"""PII redaction at the source: an STT config with ``redact_pii`` asks Deepgram to redact card
numbers and SSNs (the listen double records the handshake's query); without it, nothing."""

from __future__ import annotations

from common.providers import EnvKeySource
from stt_svc.providers.deepgram_nova import DeepgramRecognizer
from tests.doubles.deepgram_api import DeepgramListenDouble
from tests.integration.test_stt_deepgram import AUDIO, assert_heard_once, config, dg_config, recognize, stt


async def test_redact_pii_reaches_deepgram_as_its_redact_option() -> None:
    async with DeepgramListenDouble() as dg:
        async with stt(
            DeepgramRecognizer(dg_config(dg.url), EnvKeySource({"DEEPGRAM_API_KEY": "k"}))
        ) as addr:
            assert_heard_once(await recognize(addr, AUDIO, config(redact_pii=True)))
            assert_heard_once(await recognize(addr, AUDIO, config()))
    redacted, plain = dg.requests
    assert redacted.query["redact"] == ["pci", "ssn"]
    assert "redact" not in plain.query
