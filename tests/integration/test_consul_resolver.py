"""ConsulResolver + ChannelPool with real llm_svc hosts registered through py-consul in the Consul
API double: new instances get new streams, a critical one gets none after one blocking-query
round (its open stream runs on, then its channel closes), an outage keeps the last list, zones
are preferred, and the gateway starts and stops its watch."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

import grpc
import grpc.aio
import pytest

from common.consul import consul_client, off_loop
from common.consul_resolver import ConsulResolver
from common.discovery import ChannelPool
from gateway.app import GatewayApp, Settings
from tests.doubles.consul_api import ConsulApiDouble
from tests.integration.consul_harness import (
    LLM,
    chat,
    consul_double,
    consul_settings,
    eventually,
    registered_llm,
)


@pytest.fixture
def api() -> Iterator[ConsulApiDouble]:
    with consul_double() as double:
        yield double


def addresses(resolver: ConsulResolver, service: str = "llm") -> list[str]:
    watch = resolver._watches.get(service)
    return [e.address for e in watch.endpoints] if watch else []


async def hold(pool: ChannelPool, stack: contextlib.AsyncExitStack) -> tuple[str, grpc.aio.Channel]:
    """Open a stream slot through ``pool`` held until ``stack`` closes: (its address, its channel)."""
    before = pool.in_flight()
    channel = await stack.enter_async_context(pool.stream())
    [address] = [a for a, n in pool.in_flight().items() if n > before.get(a, 0)]
    return address, channel


def health_queries(api: ConsulApiDouble) -> int:
    return sum(1 for s in api.seen if s.path == f"/v1/health/service/{LLM}")


async def test_a_new_instance_appears_and_takes_new_streams(api: ConsulApiDouble) -> None:
    resolver = ConsulResolver(consul_settings(api))
    pool = ChannelPool("llm", resolver)
    try:
        async with registered_llm(api) as (a, _, _host):
            assert [e.address for e in await resolver.resolve("llm")] == [a]
            async with pool.stream() as ch_a:
                assert await chat(ch_a) == "Fine."
                async with registered_llm(api) as (b, _, _host_b):
                    await eventually(lambda: addresses(resolver) == sorted([a, b]), what="b in discovery")
                    async with pool.stream() as ch_b:  # a carries one stream, so b gets this one
                        assert await chat(ch_b) == "Fine."
                        assert pool.in_flight() == {a: 1, b: 1}
                await eventually(lambda: addresses(resolver) == [a], what="b deregistered")
            assert (await pool.pick()).endpoint.address == a
            assert pool.in_flight() == {a: 0}  # b's idle channel closed on the first pick after it left
    finally:
        await pool.close()
        await resolver.aclose()


async def test_a_critical_instance_gets_no_new_streams_after_one_round_and_its_open_stream_finishes(
    api: ConsulApiDouble,
) -> None:
    resolver = ConsulResolver(consul_settings(api))  # blocking queries wait 10 min: only a change ends one
    pool = ChannelPool("llm", resolver)
    try:
        async with (
            registered_llm(api, llm_token_delay_ms=40) as (a, _, _ha),
            registered_llm(api, llm_token_delay_ms=40) as (b, reg_b, _hb),
        ):
            resolver.watch("llm")
            await eventually(lambda: len(addresses(resolver)) == 2, what="a and b in discovery")
            held = contextlib.AsyncExitStack()
            channels = dict([await hold(pool, held), await hold(pool, held)])  # one stream on each
            assert pool.in_flight() == {a: 1, b: 1}
            long_reply = " ".join(["word"] * 10) + "."
            on_b = asyncio.ensure_future(chat(channels[b], long_reply))
            await asyncio.sleep(0.1)
            before = health_queries(api)
            api.set_status(reg_b.service_id, "critical")
            await eventually(lambda: addresses(resolver) == [a], what="b out of discovery")
            # One blocking query returned with the change (the next is already waiting).
            assert health_queries(api) - before <= 1
            for _ in range(4):
                async with pool.stream() as ch:
                    assert ch is channels[a]
            assert pool.retired() == {b: 1}  # b still carries its open stream, on an open channel
            assert channels[b].get_state() != grpc.ChannelConnectivity.SHUTDOWN
            assert await on_b == long_reply
            await held.aclose()  # its last stream ends: now b's channel closes
            assert channels[b].get_state() == grpc.ChannelConnectivity.SHUTDOWN
            assert channels[a].get_state() != grpc.ChannelConnectivity.SHUTDOWN
            assert pool.retired() == {} and pool.in_flight() == {a: 0}
    finally:
        await pool.close()
        await resolver.aclose()


async def test_consul_down_keeps_the_last_instances_and_recovers(api: ConsulApiDouble) -> None:
    resolver = ConsulResolver(consul_settings(api))
    pool = ChannelPool("llm", resolver)
    try:
        async with (
            registered_llm(api) as (a, reg_a, _ha),
            registered_llm(api, passing=False) as (b, reg_b, _hb),
        ):
            assert [e.address for e in await resolver.resolve("llm")] == [a]
            api.stop()
            await asyncio.sleep(0.3)  # the watch sees the agent gone and retries with backoff
            assert [e.address for e in await resolver.resolve("llm")] == [a]
            async with pool.stream() as ch:
                assert await chat(ch) == "Fine."
            api.set_status(reg_a.service_id, "critical")  # changes the agent will report once back
            api.set_status(reg_b.service_id, "passing")
            api.start()
            await eventually(lambda: addresses(resolver) == [b], what="the watch to recover")
            async with pool.stream() as ch:
                assert pool.in_flight() == {b: 1}
                assert await chat(ch) == "Fine."
    finally:
        await pool.close()
        await resolver.aclose()


async def test_first_resolve_with_consul_unreachable_returns_nothing_after_a_bounded_wait(
    api: ConsulApiDouble,
) -> None:
    settings = consul_settings(api, first_fetch_timeout_s=0.5)
    api.stop()
    resolver = ConsulResolver(settings)
    try:
        assert await resolver.resolve("llm") == ()
        with pytest.raises(Exception, match="no instance of the llm service"):
            await ChannelPool("llm", resolver).pick()
    finally:
        await resolver.aclose()


async def test_zone_preference_falls_back_to_other_zones(api: ConsulApiDouble) -> None:
    client = consul_client(consul_settings(api))
    for sid, zone, port in (("z1-a", "z1", 7001), ("z1-b", "z1", 7002), ("z2-a", "z2", 7003)):
        await off_loop(
            client.agent.service.register,
            LLM,
            service_id=sid,
            address="10.0.0.1",
            port=port,
            tags=[f"zone={zone}"],
            meta={"zone": zone},
            check={"TTL": "10s", "Status": "passing"},
        )
    resolver = ConsulResolver(consul_settings(api, zone="z1"))
    everywhere = ConsulResolver(consul_settings(api, zone="z1", prefer_zone=False))
    try:
        assert [e.address for e in await resolver.resolve("llm")] == ["10.0.0.1:7001", "10.0.0.1:7002"]
        assert [e.zone for e in await everywhere.resolve("llm")] == ["z1", "z1", "z2"]
        api.set_status("z1-a", "critical")
        api.set_status("z1-b", "critical")
        await eventually(lambda: addresses(resolver) == ["10.0.0.1:7003"], what="fallback to z2")
    finally:
        await resolver.aclose()
        await everywhere.aclose()


async def test_gateway_watches_consul_from_start_to_drain(
    api: ConsulApiDouble, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONSUL_HTTP_ADDR", api.address)
    monkeypatch.setenv("CONSUL_HTTP_TOKEN", "consul-acl-secret-5f3c")
    async with registered_llm(api) as (a, _, _h):
        app = GatewayApp(Settings(grace_period_s=0.5))
        resolver = app._watch
        assert isinstance(resolver, ConsulResolver)
        await app.start()
        try:
            wanted = {f"/v1/health/service/voiceai-{s}" for s in ("stt", "llm", "tts")}
            await eventually(lambda: wanted <= {s.path for s in api.seen}, what="watches started")
            assert (await app.clients.llm.pick()).endpoint.address == a
        finally:
            await app.drain(0.5)
        assert all(w.task is not None and w.task.done() for w in resolver._watches.values())
