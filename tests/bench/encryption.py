"""Encryption-at-rest benchmark: what sealing a call record's transcript costs per write and read.

Two views, both on one typical record (10 turns, ~2 KB of transcript JSON):
- crypto only: AES-GCM seal/open with the tenant's data key already unwrapped (in-process);
- through tenant_svc's repository on embedded PostgreSQL: insert_call + get_call with sealing
  (which also reads the tenant's wrapped data key in the same transaction) versus without.

    python -m tests.bench.encryption [--records 300]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

from common.crypto import LocalKeyProvider, TenantKeyring, create_key_ring
from common.crypto.envelope import associated_data, new_data_key, open_sealed, seal
from common.gen.voiceai.tenant.v1 import resources_pb2 as pb
from tenant_svc.db.database import DatabaseSettings, open_pool
from tenant_svc.protection import DataProtection
from tenant_svc.repository import Repository


def record() -> pb.Call:
    """A typical finished call: 10 turns of ordinary sentences."""
    call = pb.Call(status=pb.CALL_STATUS_COMPLETED)
    call.end_time.GetCurrentTime()
    for i in range(10):
        call.turns.add(
            index=i,
            caller_text="I would like to move my appointment to Thursday afternoon if possible",
            agent_text="Of course. I have Thursday at two or at four thirty; which one suits you?",
            first_audio_out_ms=612.5,
        )
    return call


def crypto_only(n: int) -> tuple[float, float, int]:
    """(seal us, open us, bytes) per record with the data key already unwrapped."""
    from google.protobuf import json_format

    turns = [json_format.MessageToDict(t, preserving_proto_field_name=True) for t in record().turns]
    data = json.dumps(turns).encode()
    key, aad = new_data_key(), associated_data("acme", "call-1", "turns")
    t0 = time.perf_counter()
    sealed = [seal(key, 1, data, aad) for _ in range(n)]
    t1 = time.perf_counter()
    for s in sealed:
        open_sealed(key, s, aad)
    t2 = time.perf_counter()
    return (t1 - t0) / n * 1e6, (t2 - t1) / n * 1e6, len(data)


async def _timed(n: int, op: Callable[[int], Awaitable[object]]) -> list[float]:
    out = []
    for i in range(n):
        t0 = time.perf_counter()
        await op(i)
        out.append((time.perf_counter() - t0) * 1e6)
    return out


async def through_postgres(n: int) -> dict[str, tuple[float, float]]:
    """Median write/read us through the repository, plaintext versus sealed."""
    tmp = Path(tempfile.mkdtemp(prefix="voiceai-bench-enc-"))
    create_key_ring(tmp / "kek.json")
    protection = DataProtection(TenantKeyring(LocalKeyProvider.from_file(tmp / "kek.json")))
    pool = await open_pool(DatabaseSettings(url="", pg_data_dir=tmp / "pg"))
    results: dict[str, tuple[float, float]] = {}
    try:
        call = record()
        # Two rounds, alternating; the second is reported (the first warms PostgreSQL and caches).
        rounds = [("plaintext", Repository(pool)), ("sealed", Repository(pool, protection))] * 2
        for label, repo in rounds:
            tid = f"b-{uuid.uuid4().hex[:10]}"
            async with repo.platform() as p:
                await p.create_tenant(tid, "bench", pb.PLAN_TIER_PRO)

            async def write(i: int, repo: Repository = repo, tid: str = tid) -> None:
                async with repo.tenant(tid) as t:
                    await t.insert_call(f"c{i}", "", call)

            async def read(i: int, repo: Repository = repo, tid: str = tid) -> None:
                async with repo.tenant(tid) as t:
                    await t.get_call(f"c{i}")

            await write(-1)  # the first write creates the data key: not counted
            w = await _timed(n, write)
            r = await _timed(n, read)
            results[label] = (statistics.median(w), statistics.median(r))
    finally:
        await pool.close()
    return results


def main(argv: list[str] | None = None) -> None:
    """Print the table."""
    parser = argparse.ArgumentParser(prog="python -m tests.bench.encryption")
    parser.add_argument("--records", type=int, default=300)
    args = parser.parse_args(argv)
    seal_us, open_us, size = crypto_only(args.records * 10)
    print(f"\n== encryption at rest (call record transcript, {size} bytes of JSON) ==")
    print(f"crypto only (AES-256-GCM, key cached): seal {seal_us:.1f} us, open {open_us:.1f} us per record")
    res = asyncio.run(through_postgres(args.records))
    (pw, pr), (sw, sr) = res["plaintext"], res["sealed"]
    print(f"{'tenant_svc repository, median us':34} {'write':>9} {'read':>9}")
    print(f"{'plaintext':34} {pw:9.0f} {pr:9.0f}")
    print(f"{'sealed (data key read + AES-GCM)':34} {sw:9.0f} {sr:9.0f}")
    print(f"{'cost of encryption':34} {sw - pw:+9.0f} {sr - pr:+9.0f}")


if __name__ == "__main__":
    main()
