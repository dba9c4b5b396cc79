"""Atomic writes reach the disk before their rename, and what a killed writer leaves is cleaned
up without losing the only copy of a folder."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from pointseg.utils import io
from pointseg.utils.io import atomic_path, atomic_write_text, remove_temporaries, save_npy


def _synced(monkeypatch) -> list[str]:
    """Record what is fsynced, by path, and when renames happen."""
    events: list[str] = []
    real_fsync, real_replace, real_open = os.fsync, os.replace, os.open
    names: dict[int, str] = {}

    def opened(path, flags, *args, **kwargs):
        fd = real_open(path, flags, *args, **kwargs)
        names[fd] = Path(path).name
        return fd

    def fsync(fd):
        events.append(f"fsync {names.get(fd, fd)}")
        return real_fsync(fd)

    def replace(src, dst):
        events.append(f"replace {Path(src).name[:2]}.. -> {Path(dst).name}")
        return real_replace(src, dst)

    monkeypatch.setattr(io.os, "open", opened)
    monkeypatch.setattr(io.os, "fsync", fsync)
    monkeypatch.setattr(io.os, "replace", replace)
    return events


def test_a_file_is_synced_before_its_rename_and_the_folder_after(tmp_path, monkeypatch):
    events = _synced(monkeypatch)
    atomic_write_text(tmp_path / "a.txt", "hello")
    tmp_sync, rename, dir_sync = events
    assert tmp_sync.startswith("fsync .a.txt.") and tmp_sync.endswith(".tmp")
    assert rename == "replace .a.. -> a.txt"
    assert dir_sync == f"fsync {tmp_path.name}"
    events.clear()
    save_npy(tmp_path / "x.npy", np.arange(3))
    assert [e.split(" ")[0] for e in events] == ["fsync", "replace", "fsync"]
    assert np.load(tmp_path / "x.npy").tolist() == [0, 1, 2]


def test_a_folder_is_synced_with_its_files_before_it_replaces_the_old_one(tmp_path, monkeypatch):
    target = tmp_path / "scene"
    target.mkdir()
    (target / "old.npy").write_text("old")
    events = _synced(monkeypatch)
    with atomic_path(target) as tmp:
        tmp.mkdir()
        (tmp / "coord.npy").write_text("new")
    assert events[0] == "fsync coord.npy" and events[1].startswith("fsync .scene.")
    assert [e.split(" ")[0] for e in events[2:]] == ["replace", "replace", "fsync"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scene"]
    assert sorted(p.name for p in target.iterdir()) == ["coord.npy"]


def test_a_folder_replace_killed_between_its_renames_is_restored_not_deleted(tmp_path):
    (tmp_path / ".scene.old.4242").mkdir()  # the only copy: killed after moving it aside
    (tmp_path / ".scene.old.4242" / "coord.npy").write_text("kept")
    (tmp_path / ".scene.abcd1234.tmp").mkdir()  # the new copy, never renamed
    (tmp_path / "done").mkdir()
    (tmp_path / ".done.old.4242").mkdir()  # killed after the second rename: the old copy goes
    removed = remove_temporaries(tmp_path)
    assert sorted(p.name for p in removed) == [".done.old.4242", ".scene.abcd1234.tmp"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["done", "scene"]
    assert (tmp_path / "scene" / "coord.npy").read_text() == "kept"


def test_temporaries_of_named_outputs_only(tmp_path):
    for name in (".config.yaml.k3j4h5g6.tmp", ".log.jsonl.a1b2c3d4.tmp", ".metrics.json.zz99yy88.tmp"):
        (tmp_path / name).write_text("partial")
    removed = remove_temporaries(tmp_path, ("config.yaml", "log.jsonl"))
    assert sorted(p.name for p in removed) == [".config.yaml.k3j4h5g6.tmp", ".log.jsonl.a1b2c3d4.tmp"]
    assert [p.name for p in tmp_path.iterdir()] == [".metrics.json.zz99yy88.tmp"]  # another program's
