"""Atomic writes land with the mode a plain open()/mkdir() gives under the umask, not tempfile's 0600/0700."""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

import numpy as np
import pytest

from msd_triplet.fileio import atomic_path, atomic_write_json, atomic_write_text, sibling_temp


@contextlib.contextmanager
def umask(value: int):
    """Run the block under ``value`` as the process umask, then restore the previous one."""
    previous = os.umask(value)
    try:
        yield
    finally:
        os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def modes(folder: Path) -> dict[str, int]:
    """Mode of every entry under ``folder`` (the folder itself as ".")."""
    return {".": mode(folder), **{str(p.relative_to(folder)): mode(p) for p in folder.rglob("*")}}


@pytest.mark.parametrize(
    ("mask", "file_mode", "folder_mode"), [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700)], ids=["umask022", "umask077"]
)
def test_atomic_writes_get_the_mode_of_a_plain_open(tmp_path, mask, file_mode, folder_mode):
    with umask(mask):
        atomic_write_text(tmp_path / "a.txt", "text")
        atomic_write_json(tmp_path / "b.json", {"a": 1})
        with atomic_path(tmp_path / "c.npz", suffix=".npz") as tmp:
            np.savez(tmp, x=np.arange(3))
        atomic_write_text(tmp_path / "c.npz", "overwritten")  # replacing a file gives the same mode
        folder = sibling_temp(tmp_path / "export", folder=True)
        plain = tmp_path / "plain.txt"
        plain.write_text("reference")
    assert {p.name: mode(p) for p in tmp_path.iterdir()} == {
        "a.txt": file_mode,
        "b.json": file_mode,
        "c.npz": file_mode,
        folder.name: folder_mode,
        "plain.txt": file_mode,
    }
    assert mode(plain) == file_mode  # the reference: what open() gives under this umask
    assert folder.name.startswith(".export.")


def test_failed_atomic_write_leaves_nothing_and_keeps_the_old_file(tmp_path):
    atomic_write_text(tmp_path / "a.txt", "old")
    with pytest.raises(RuntimeError), atomic_path(tmp_path / "a.txt") as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"] and (tmp_path / "a.txt").read_text() == "old"


def test_feature_cache_files_are_world_readable_under_umask_022(tmp_path):
    from msd_triplet.config import FeatureConfig
    from msd_triplet.featurecache import open_or_create

    with umask(0o022):
        cache = open_or_create(
            tmp_path / "cache", ["T1", "T2", "T3"], ["a.wav", "b.wav", "c.wav"], FeatureConfig(), None
        )
        shard = cache.shards[0]
        shard.save_status(np.array([1, 0, 0], np.int8), {})  # a rewrite, as extraction does
    found = modes(cache.directory)
    assert {"cache.json", "tracks.csv"} <= set(found) and any(name.endswith("features.npy") for name in found)
    assert found == {name: 0o755 if (cache.directory / name).is_dir() else 0o644 for name in found}
