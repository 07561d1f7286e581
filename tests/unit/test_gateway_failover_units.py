"""ChannelPool's failure penalty and the replay ring behind STT failover."""

from __future__ import annotations

import asyncio

from common.discovery import ChannelPool, StaticResolver


async def _picks(pool: ChannelPool, n: int) -> list[str]:
    out = []
    for _ in range(n):
        async with pool.lease() as lease:
            out.append(lease.address)
    return out


async def test_a_failed_instance_gets_no_new_streams_until_its_penalty_ends() -> None:
    a, b = "127.0.0.1:1", "127.0.0.1:2"
    pool = ChannelPool("stt", StaticResolver({"stt": [a, b]}))
    try:
        assert set(await _picks(pool, 4)) == {a, b}
        pool.mark_failed(a, seconds=0.2)
        assert pool.failed() == [a]
        assert await _picks(pool, 4) == [b] * 4
        await asyncio.sleep(0.25)
        assert pool.failed() == []
        assert set(await _picks(pool, 4)) == {a, b}
    finally:
        await pool.close()


async def test_when_every_instance_failed_recently_they_are_all_still_tried() -> None:
    a, b = "127.0.0.1:1", "127.0.0.1:2"
    pool = ChannelPool("stt", StaticResolver({"stt": [a, b]}))
    try:
        pool.mark_failed(a)
        pool.mark_failed(b)
        assert set(await _picks(pool, 4)) == {a, b}
    finally:
        await pool.close()
