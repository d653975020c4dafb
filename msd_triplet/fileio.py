"""Small file helpers shared by every stage: atomic writes and JSON/CSV output.

A write goes to a temporary file in the destination's directory and is moved
into place with :func:`os.replace`, so a killed run leaves either the old file
or the new one, never half of one.

Temporary files and folders are created with mode 0o666 / 0o777 for the
kernel to apply the umask to, so what lands in place has the permissions a
plain ``open()`` / ``mkdir()`` would give (0644 / 0755 under umask 022), not
:mod:`tempfile`'s private 0600 / 0700. No umask is read or changed.
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from pathlib import Path
from typing import Any, Iterator


def sibling_temp(path: str | os.PathLike, suffix: str = ".tmp", *, folder: bool = False) -> Path:
    """Create a new, empty file (or folder) with a hidden unique name beside ``path``; return its path.

    Unlike :func:`tempfile.mkstemp` / :func:`tempfile.mkdtemp` (always 0600 /
    0700), it gets the mode a plain ``open()`` / ``mkdir()`` would give under
    the current umask: 0o666 & ~umask for a file, 0o777 & ~umask for a folder.
    The parent folder must exist.
    """
    path = Path(path)
    for _ in range(100):
        candidate = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}{suffix}")
        try:
            if folder:
                os.mkdir(candidate, 0o777)
            else:
                os.close(os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return candidate
    raise FileExistsError(f"{path.parent}: no free temporary name for {path.name}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success move it onto ``path``.

    ``suffix`` is given to the temporary file for writers that pick their
    format from the file name (e.g. ``.npz``). The file that lands on ``path``
    has mode 0o666 & ~umask, as with a plain ``open()`` (:func:`sibling_temp`),
    unless the writer changed it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = sibling_temp(path, suffix or ".tmp")
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns ``path``."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON to ``path`` atomically; returns ``path``."""
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")
