"""The record outbox: latest snapshot per call, bounded, acknowledged rows leave, live calls
survive a reopen (a crash), one process per file."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.gen.voiceai.tenant.v1 import resources_pb2 as pb
from gateway.records.delivery import INTERRUPTED_REASON, interrupted
from gateway.records.outbox import OutboxFull, OutboxLocked, RecordOutbox, Snapshot


def snap(call: str, revision: int, final: bool = False, turns: int = 0) -> Snapshot:
    record = pb.Call(status=pb.CALL_STATUS_IN_PROGRESS)
    for i in range(1, turns + 1):
        record.turns.add(index=i, caller_text=f"turn {i}")
    return Snapshot("tenant-a", call, revision, final, record.SerializeToString())


async def test_latest_revision_wins_and_older_ones_change_nothing(tmp_path: Path) -> None:
    box = RecordOutbox(tmp_path / "o.sqlite3")
    assert await box.open() == []
    assert await box.put(snap("c1", 2, turns=2))
    assert not await box.put(snap("c1", 1, turns=1))  # a late older snapshot
    assert not await box.put(snap("c1", 2, turns=1))  # a replay
    (due,) = await box.due(10)
    assert due.revision == 2 and len(pb.Call.FromString(due.payload).turns) == 2
    await box.close()


async def test_a_live_call_stays_after_delivery_and_a_final_one_leaves(tmp_path: Path) -> None:
    box = RecordOutbox(tmp_path / "o.sqlite3")
    await box.open()
    await box.put(snap("c1", 1))
    (first,) = await box.due(10)
    await box.acknowledged(first)
    assert await box.due(10) == [] and await box.counts() == {"pending": 0, "live": 1, "parked": 0}
    await box.put(snap("c1", 2, final=True))
    (final,) = await box.due(10)
    await box.acknowledged(final)
    assert await box.counts() == {"pending": 0, "live": 0, "parked": 0}
    await box.close()


async def test_retry_later_and_parked_rows_are_not_due(tmp_path: Path) -> None:
    box = RecordOutbox(tmp_path / "o.sqlite3")
    await box.open()
    await box.put(snap("c1", 1))
    await box.put(snap("c2", 1))
    a, b = await box.due(10)
    await box.retry_later(a, 60.0)
    await box.retry_later(b, 0.0, parked="INVALID_ARGUMENT")
    assert await box.due(10) == []
    assert 50 < (await box.next_due_in() or 0) <= 60
    assert (await box.counts())["parked"] == 1
    await box.close()


async def test_bounded_new_calls_refused_existing_ones_still_update(tmp_path: Path) -> None:
    box = RecordOutbox(tmp_path / "o.sqlite3", max_calls=2)
    await box.open()
    await box.put(snap("c1", 1))
    await box.put(snap("c2", 1))
    with pytest.raises(OutboxFull):
        await box.put(snap("c3", 1))
    assert await box.put(snap("c1", 2, final=True))
    await box.close()


async def test_a_reopened_outbox_hands_back_the_live_calls_and_they_become_interrupted(
    tmp_path: Path,
) -> None:
    path = tmp_path / "o.sqlite3"
    box = RecordOutbox(path)
    await box.open()
    await box.put(snap("live", 3, turns=2))
    await box.put(snap("done", 4, final=True))
    await box.close()  # the process stops here without finishing "live"
    again = RecordOutbox(path)
    (left,) = await again.open()
    assert left.call_id == "live" and left.revision == 3
    ended = interrupted(left)
    call = pb.Call.FromString(ended.payload)
    assert ended.final and ended.revision == 4
    assert call.status == pb.CALL_STATUS_INTERRUPTED and call.end_reason == INTERRUPTED_REASON
    assert [t.caller_text for t in call.turns] == ["turn 1", "turn 2"] and call.HasField("end_time")
    assert {s.call_id for s in await again.due(10)} == {"live", "done"}
    await again.close()


async def test_one_process_per_outbox_file(tmp_path: Path) -> None:
    box = RecordOutbox(tmp_path / "o.sqlite3")
    await box.open()
    with pytest.raises(OutboxLocked, match="VOICEAI_RECORD_OUTBOX_PATH"):
        await RecordOutbox(tmp_path / "o.sqlite3").open()
    await box.close()
    other = RecordOutbox(tmp_path / "o.sqlite3")
    await other.open()
    await other.close()
