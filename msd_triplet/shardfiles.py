"""Result files that many workers write and one process reads back: on a local disk or behind a URL.

Batch jobs here (feature extraction on Beam, embedding locally or on Beam) cut
their work into numbered pieces and write each finished piece as one ``.npz``
file. A file is written under a temporary name and renamed into place, so its
presence means the piece is complete: a rerun lists the folder and does only
the pieces that are missing, and a worker that retries a piece overwrites it
with the same content.

Local paths use the file system directly (no Beam needed, so the local
``embed`` can use this module). A path with a scheme (``gs://``, ``s3://``,
``hdfs://``, …) goes through Apache Beam's ``FileSystems``, so the workers of
Dataflow, Flink or Spark can write where the launcher reads.
"""

from __future__ import annotations

import io
import os
import uuid
from pathlib import Path
from typing import Mapping

import numpy as np

from msd_triplet.fileio import atomic_path


def is_url(path: str | os.PathLike) -> bool:
    """True for ``scheme://…`` paths (read and written through Beam's FileSystems)."""
    return "://" in str(path)


def join(folder: str | os.PathLike, name: str) -> str:
    """``folder/name`` for a local folder or a URL."""
    folder = str(folder)
    return f"{folder.rstrip('/')}/{name}" if is_url(folder) else str(Path(folder) / name)


def _filesystems():
    from apache_beam.io.filesystems import FileSystems

    return FileSystems


def make_folder(folder: str | os.PathLike) -> None:
    """Create a local folder (and its parents); URL folders need no creation."""
    if not is_url(folder):
        Path(folder).mkdir(parents=True, exist_ok=True)


#: What the temporary name of an unfinished write ends with (local: ``.<name>.<hex>.tmp``, a URL: ``<name>.tmp-<hex>``).
_URL_TMP = ".tmp-"


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` under a temporary name, then rename it into place."""
    path = str(path)
    if not is_url(path):
        with atomic_path(path) as tmp:
            tmp.write_bytes(data)
        return
    fs = _filesystems()
    tmp = f"{path}{_URL_TMP}{uuid.uuid4().hex[:12]}"
    with fs.create(tmp) as f:
        f.write(data)
    fs.rename([tmp], [path])


def read_bytes(path: str | os.PathLike) -> bytes:
    path = str(path)
    if not is_url(path):
        return Path(path).read_bytes()
    with _filesystems().open(path) as f:
        return f.read()


def write_npz(path: str | os.PathLike, arrays: Mapping[str, np.ndarray]) -> None:
    """Save ``arrays`` as one uncompressed ``.npz`` at ``path``, atomically."""
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    write_bytes(path, buffer.getvalue())


def read_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The arrays of an ``.npz`` written by :func:`write_npz` (no pickles)."""
    with np.load(io.BytesIO(read_bytes(path)), allow_pickle=False) as data:
        return {name: data[name] for name in data.files}


def list_names(folder: str | os.PathLike, pattern: str) -> list[str]:
    """Sorted names (not paths) of the files in ``folder`` matching the glob ``pattern``; [] if no folder."""
    folder = str(folder)
    if not is_url(folder):
        return sorted(p.name for p in Path(folder).glob(pattern) if p.is_file())
    matched = _filesystems().match([join(folder, pattern)])[0].metadata_list
    return sorted(m.path.rsplit("/", 1)[-1] for m in matched)


def match(pattern: str) -> list[str]:
    """Sorted paths of the files a URL glob pattern matches (through Beam's FileSystems)."""
    return sorted(m.path for m in _filesystems().match([pattern])[0].metadata_list)


def delete(paths: list[str]) -> None:
    """Delete files (missing ones are fine)."""
    local = [p for p in paths if not is_url(p)]
    for path in local:
        Path(path).unlink(missing_ok=True)
    remote = [p for p in paths if is_url(p)]
    if remote:
        fs = _filesystems()
        existing = [p for p in remote if fs.exists(p)]
        if existing:
            fs.delete(existing)


def remove_folder(folder: str | os.PathLike, prefix: str) -> None:
    """Delete what a finished job leaves in ``folder``: the temporary files of writes that were killed
    (names starting with ``prefix``), then the folder itself if it is local and empty."""
    folder = str(folder)
    if is_url(folder):
        delete([join(folder, n) for n in list_names(folder, f"{prefix}*{_URL_TMP}*")])
        return
    for leftover in Path(folder).glob(f".{prefix}*.tmp"):
        leftover.unlink(missing_ok=True)
    try:
        Path(folder).rmdir()
    except OSError:  # not empty (other files were put there) or already gone
        pass
