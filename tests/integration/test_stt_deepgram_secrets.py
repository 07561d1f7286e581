"""A self-hosted Deepgram URL may carry credentials (``wss://user:password@host``, basic auth at
a proxy): they must not reach error messages, which become logs and gRPC statuses."""

from __future__ import annotations

import logging

import pytest

from common.providers import EnvKeySource, ProviderError
from stt_svc.chain import ChainRecognizer
from stt_svc.providers.base import RecognitionOptions
from stt_svc.providers.deepgram_nova import DeepgramConfig, DeepgramRecognizer
from tests.doubles.deepgram_api import DeepgramListenDouble, ListenFault, ToneWordsRecognizer

SECRET = "s3cret-pass"


@pytest.mark.parametrize("status", [500, 401, 429])
async def test_url_credentials_stay_out_of_errors_and_logs(
    status: int, caplog: pytest.LogCaptureFixture
) -> None:
    async with DeepgramListenDouble() as dg:
        url = dg.url.replace("ws://", f"ws://ops:{SECRET}@")
        dg.faults.append(ListenFault(status=status))
        provider = DeepgramRecognizer(DeepgramConfig(urls=(url,)), EnvKeySource({"DEEPGRAM_API_KEY": "k"}))
        with pytest.raises(ProviderError) as refused:
            await provider.open(RecognitionOptions())
        dg.faults.append(ListenFault(status=status))
        chain = ChainRecognizer({"deepgram": provider, "local": ToneWordsRecognizer()}, ["deepgram", "local"])
        with caplog.at_level(logging.INFO):
            stream = await chain.open(RecognitionOptions())  # falls back, logging the failure
            await stream.aclose()
        await provider.aclose()
    assert SECRET not in str(refused.value)
    assert "ops@127.0.0.1" in str(refused.value)  # still says which endpoint
    assert "falling back" in caplog.text and SECRET not in caplog.text
