"""How many gateway workers ``python -m gateway`` starts by default: the usable cores, capped by
the cgroup's CPU quota (v2 ``cpu.max`` or v1 ``cfs_quota_us``)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gateway import workers


def test_cgroup_v2_quota(tmp_path: Path) -> None:
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert workers.cgroup_cpu_quota(tmp_path) == 1.5
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert workers.cgroup_cpu_quota(tmp_path) is None


def test_cgroup_v1_quota(tmp_path: Path) -> None:
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("300000\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert workers.cgroup_cpu_quota(tmp_path) == 3.0
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    assert workers.cgroup_cpu_quota(tmp_path) is None
    assert workers.cgroup_cpu_quota(tmp_path / "absent") is None


def test_default_is_the_affinity_capped_by_the_quota_rounded_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {0, 1, 2, 3})
    monkeypatch.setattr(workers, "cgroup_cpu_quota", lambda: 1.5)
    assert workers.default_workers() == 2
    monkeypatch.setattr(workers, "cgroup_cpu_quota", lambda: 0.25)
    assert workers.default_workers() == 1
    monkeypatch.setattr(workers, "cgroup_cpu_quota", lambda: None)
    assert workers.default_workers() == 4


def test_a_taken_port_fails_with_a_message(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(SystemExit, match=f"cannot bind 127.0.0.1:{port}"):
            workers.reserve_port("127.0.0.1", port)
    reserved = workers.reserve_port("127.0.0.1", 0)
    with reserved, socket.socket() as sharing:  # a worker binds the same port with SO_REUSEPORT
        sharing.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sharing.bind(("127.0.0.1", reserved.getsockname()[1]))
