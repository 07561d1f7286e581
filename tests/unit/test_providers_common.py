"""common.providers: per-tenant keys, the per-key concurrency cap, chain resolution."""

from __future__ import annotations

import asyncio

import pytest

from common.errors import FailedPrecondition, InvalidArgument
from common.provider_clients import ClientCache
from common.providers import ProviderBusy, ProviderKey, ProviderLimiter, resolve_chain, resolve_key


def test_tenant_key_wins_and_repr_hides_the_secret() -> None:
    env = {"DEEPGRAM_API_KEY": "shared-secret", "DEEPGRAM_API_KEY__ACME_CORP": "acme-secret"}
    own = resolve_key("DEEPGRAM_API_KEY", "acme-corp", env)
    assert own is not None and own.value == "acme-secret" and own.label == "tenant"
    other = resolve_key("DEEPGRAM_API_KEY", "globex", env)
    assert other is not None and other.value == "shared-secret" and other.label == "default"
    assert own.fingerprint != other.fingerprint
    assert "secret" not in repr(own) and "secret" not in repr(other)
    assert resolve_key("DEEPGRAM_API_KEY", "acme-corp", {}) is None


async def test_cap_admits_capacity_then_queues_then_refuses() -> None:
    limiter = ProviderLimiter("stt", "deepgram", capacity=2, queue_timeout_s=0.05)
    key = resolve_key("K", "", {"K": "k1"})
    release = asyncio.Event()
    both_in = asyncio.Event()
    entered = 0

    async def hold() -> None:
        nonlocal entered
        async with limiter.slot(key):
            entered += 1
            if entered == 2:
                both_in.set()
            await release.wait()

    holders = [asyncio.create_task(hold()) for _ in range(2)]
    await both_in.wait()
    with pytest.raises(ProviderBusy) as busy:
        async with limiter.slot(key):
            pass
    assert busy.value.retry_after_s and "cap" in busy.value.message
    # Another key has its own slots.
    async with limiter.slot(resolve_key("K", "", {"K": "k2"})):
        pass
    # A queued waiter gets the slot a holder releases.
    waiter = asyncio.create_task(hold())
    await asyncio.sleep(0)
    limiter.queue_timeout_s = 5.0
    release.set()
    await asyncio.gather(*holders, waiter)
    assert entered == 3 and limiter.in_use(key) == 0


async def test_cancelled_waiter_does_not_leak_a_slot() -> None:
    limiter = ProviderLimiter("tts", "deepgram", capacity=1, queue_timeout_s=5.0)
    hold = asyncio.Event()

    async def holder() -> None:
        async with limiter.slot():
            await hold.wait()

    h = asyncio.create_task(holder())
    await asyncio.sleep(0)
    waiter = asyncio.create_task(holder())
    await asyncio.sleep(0.01)
    waiter.cancel()
    hold.set()
    await h
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert limiter.in_use() == 0
    async with limiter.slot():
        assert limiter.in_use() == 1


def test_chain_resolution() -> None:
    available = {"local": "L", "deepgram": "D"}
    known = ("local", "deepgram")
    chain = resolve_chain("stt", ["deepgram", "local", "deepgram"], ["local"], known, available)
    assert [(c.name, c.engine) for c in chain] == [("deepgram", "D"), ("local", "L")]
    assert [c.name for c in resolve_chain("stt", [], ["local"], known, available)] == ["local"]
    assert [c.name for c in resolve_chain("stt", ["deepgram", "local"], [], known, {"local": "L"})] == [
        "local"
    ]
    with pytest.raises(InvalidArgument, match="unknown stt provider 'whisperx'"):
        resolve_chain("stt", ["whisperx"], [], known, available)
    with pytest.raises(FailedPrecondition, match="set the provider's API key"):
        resolve_chain("stt", ["deepgram"], [], known, {"local": "L"})


class FakeClient:
    def __init__(self, key: ProviderKey | None) -> None:
        self.key = key.value if key else ""
        self.closed = False


async def _close(client: FakeClient) -> None:
    client.closed = True


async def test_the_client_cache_is_bounded_and_never_closes_a_client_in_use() -> None:
    made: list[FakeClient] = []

    def make(key: ProviderKey | None) -> FakeClient:
        made.append(FakeClient(key))
        return made[-1]

    def key(value: str) -> ProviderKey | None:
        return resolve_key("K", "", {"K": value})

    cache: ClientCache[FakeClient] = ClientCache(make, _close, size=2)
    async with cache.lease(key("k1")) as c1:
        async with cache.lease(key("k1")) as again:
            assert again is c1
        async with cache.lease(key("k2")), cache.lease(key("k3")):  # k1 is the oldest: evicted, but in use
            assert len(cache) == 2 and not c1.closed
        assert not c1.closed
    assert c1.closed  # closed when its last lease ended
    async with cache.lease(key("k4")):
        pass
    assert [c.key for c in made if c.closed] == ["k1", "k2"]
    await cache.aclose()
    assert all(c.closed for c in made)
