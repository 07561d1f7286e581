"""common.replay.ReplayBuffer: the one replay buffer of the gateway (instance failover) and
stt_svc's provider chain (provider failover). Both layers' tests, moved here unchanged in what
they assert."""

from __future__ import annotations

from common.replay import ReplayBuffer
from stt_svc.chain import BYTES_PER_MS


def test_replay_ring_keeps_audio_by_absolute_offset() -> None:
    ring = ReplayBuffer(max_bytes=8)
    for chunk in (b"abcd", b"efgh", b"ijkl"):
        ring.append(chunk)
    # 12 bytes over an 8-byte bound: the oldest whole chunk went (at least 8 bytes stay).
    assert (ring.start, ring.end) == (4, 12)
    assert b"".join(ring.pieces(6, 3)) == b"ghijkl"
    assert list(ring.pieces(6, 3)) == [b"ghi", b"jkl"]
    assert b"".join(ring.pieces(0, 100)) == b"efghijkl"  # before start: from what is kept
    ring.release(9)  # only whole chunks that end by then
    assert ring.start == 8
    assert b"".join(ring.pieces(9, 100)) == b"jkl"


def test_replay_buffer_trims_to_finals_and_keeps_a_bounded_tail() -> None:
    buf = ReplayBuffer(100 * BYTES_PER_MS)
    for _ in range(10):
        buf.append(bytes(20 * BYTES_PER_MS))
    since = buf.aligned_start(BYTES_PER_MS)
    assert since // BYTES_PER_MS == 100 and sum(map(len, buf.pieces(since, 1 << 20))) == 100 * BYTES_PER_MS
    buf.release(
        130 * BYTES_PER_MS + 5, exact=True
    )  # mid-chunk, mid-ms: the replay starts at the next whole ms
    since = buf.aligned_start(BYTES_PER_MS)
    assert since // BYTES_PER_MS == 131 and sum(map(len, buf.pieces(since, 1 << 20))) == 69 * BYTES_PER_MS
