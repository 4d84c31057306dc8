"""Atomic outputs for validation runs: temp names in the target folder, renamed when complete.

``mkstemp``/``mkdtemp`` create 0600/0700 entries; finished outputs get the permissions the
user's umask gives ordinary files and folders.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

from vqtool.errors import OutputExistsError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path: str, suffix: str = "") -> Iterator[str]:
    """Yield a temporary path next to ``path``; on success it is renamed to ``path``, else removed."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=suffix, dir=folder)
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_text(path: str, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_path(path, os.path.splitext(path)[1]) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)


def start_folder(out: str, overwrite: bool) -> str:
    """A temporary folder next to ``out`` to assemble it in; refuses a non-empty ``out`` without ``overwrite``."""
    out = os.path.abspath(out)
    if os.path.exists(out) and not (os.path.isdir(out) and not os.listdir(out)) and not overwrite:
        raise OutputExistsError("exists; pass --overwrite to replace it, or choose another -o", path=out)
    parent = os.path.dirname(out)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.tmp-", dir=parent)
    os.chmod(tmp, 0o777 & ~_umask())
    return tmp


def commit_folder(tmp: str, out: str) -> None:
    """Move the finished folder ``tmp`` to ``out``, replacing what was there."""
    out = os.path.abspath(out)
    if not os.path.exists(out):
        os.replace(tmp, out)
        return
    old = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.old-", dir=os.path.dirname(out))
    os.rmdir(old)
    os.replace(out, old)
    os.replace(tmp, out)
    shutil.rmtree(old, ignore_errors=True)
