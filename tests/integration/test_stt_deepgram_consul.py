"""Self-hosted (GPU) Deepgram instances found through Consul: stt_svc watches the passing
instances of ``voiceai-deepgram`` (registered with the real py-consul client in the Consul API
double), balances streams over them, stops sending new streams to one whose check goes
critical, and falls back to local when none is left."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from common.consul import ConsulSettings, consul_client, off_loop
from stt_svc.app import Settings, build_host, make_chain
from stt_svc.metering import provider_of
from tests.conftest import running
from tests.doubles.consul_api import ConsulApiDouble
from tests.doubles.deepgram_api import DeepgramListenDouble, ToneWordsRecognizer
from tests.integration.consul_harness import consul_double, consul_settings, eventually
from tests.integration.test_stt_deepgram import AUDIO, assert_heard_once, config, recognize


@pytest.fixture
def api() -> Iterator[ConsulApiDouble]:
    with consul_double() as double:
        yield double


async def register(api: ConsulApiDouble, sid: str, url: str) -> None:
    port = int(url.rsplit(":", 1)[1])
    client = consul_client(consul_settings(api))
    await off_loop(
        client.agent.service.register,
        "voiceai-deepgram",
        service_id=sid,
        address="127.0.0.1",
        port=port,
        tags=["gpu"],
        check={"TTL": "60s", "Status": "passing"},
    )


async def test_streams_go_to_the_healthy_instances_consul_reports(api: ConsulApiDouble) -> None:
    async with DeepgramListenDouble() as one, DeepgramListenDouble() as two:
        await register(api, "dg-1", one.url)
        await register(api, "dg-2", two.url)
        settings = Settings(stt_providers="deepgram,local", stt_deepgram_consul_service="deepgram")
        chain = make_chain(settings, ToneWordsRecognizer(), {}, consul_settings(api))
        deepgram = provider_of(chain.engines["deepgram"])  # under its meter and VAD gate (issue 17)
        async with running(build_host(settings, chain)) as addr:
            # Two streams at once: least-in-flight puts one on each instance.
            first, second = await asyncio.gather(
                recognize(addr, AUDIO, config(providers=["deepgram"])),
                recognize(addr, AUDIO, config(providers=["deepgram"])),
            )
            assert_heard_once(first)
            assert_heard_once(second)
            assert len(one.requests) == 1 and len(two.requests) == 1

            watch = deepgram._resolver._watches["deepgram"]  # type: ignore[attr-defined]
            api.set_status("dg-1", "critical")
            await eventually(lambda: len(watch.endpoints) == 1, what="dg-1 dropped")
            for _ in range(3):
                assert_heard_once(await recognize(addr, AUDIO, config(providers=["deepgram"])))
            assert len(one.requests) == 1 and len(two.requests) == 4
            assert deepgram.endpoints.urls == (two.url,)

            api.set_status("dg-2", "critical")  # none left: local answers, every word intact
            await eventually(lambda: not watch.endpoints, what="no instance left")
            assert_heard_once(await recognize(addr, AUDIO, config(providers=["deepgram", "local"])))
            assert len(one.requests) == 1 and len(two.requests) == 4  # local heard it


def test_a_consul_service_without_consul_is_refused_by_name() -> None:
    settings = Settings(stt_providers="deepgram,local", stt_deepgram_consul_service="deepgram")
    with pytest.raises(ValueError, match="CONSUL_HTTP_ADDR"):
        make_chain(settings, ToneWordsRecognizer(), {}, ConsulSettings(addr=""))
