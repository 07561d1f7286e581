"""common.providers: per-tenant keys, the per-key concurrency cap, chain resolution."""

from __future__ import annotations

import asyncio

import pytest

from common.errors import FailedPrecondition, InvalidArgument
from common.providers import ProviderBusy, ProviderLimiter, resolve_chain, resolve_key


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
