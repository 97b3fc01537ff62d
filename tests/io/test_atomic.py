"""Atomic outputs: whole files or nothing, usual permissions, fsync only when durability is asked for."""

from __future__ import annotations

import os
import stat

import pytest

from agripatch.io import atomic
from agripatch.io.atomic import atomic_path, atomic_write_bytes, atomic_write_text


def test_writes_and_replaces_whole_files(tmp_path):
    target = tmp_path / "deep" / "er" / "out.txt"
    assert atomic_write_text(target, "first") == target
    atomic_write_text(target, "second, longer")
    assert target.read_text() == "second, longer"
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.txt"]  # no temporary left


def test_failure_keeps_the_old_file_and_removes_the_temporary(tmp_path):
    target = tmp_path / "out.bin"
    atomic_write_bytes(target, b"old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("crash mid-write")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]


def test_permissions_follow_the_umask(tmp_path):
    previous = os.umask(0o027)
    try:
        path = atomic_write_bytes(tmp_path / "f", b"x")
    finally:
        os.umask(previous)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


@pytest.mark.parametrize("durable, expected_syncs", [(True, 1), (False, 0)])
def test_fsync_only_when_durable(tmp_path, monkeypatch, durable, expected_syncs):
    calls = []
    real_fsync = os.fsync
    monkeypatch.setattr(atomic.os, "fsync", lambda fd: (calls.append(fd), real_fsync(fd)))
    atomic_write_bytes(tmp_path / "crop.jpg", b"\xff\xd8", durable=durable)
    assert len(calls) == expected_syncs
    assert (tmp_path / "crop.jpg").read_bytes() == b"\xff\xd8"


def test_failed_rename_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "crop.jpg"
    atomic_write_bytes(target, b"old", durable=False)

    def refuse(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(atomic.os, "replace", refuse)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_bytes(target, b"new", durable=False)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["crop.jpg"]
