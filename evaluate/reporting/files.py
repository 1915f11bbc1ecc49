"""Writing result files safely: whole or not at all (a temporary file renamed into place), with the
permissions an ordinary new file or folder gets under the process's umask."""
from __future__ import annotations

import fcntl
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def ordinary_mode(folder: bool = False) -> int:
    """0o644 for a file, 0o755 for a folder under umask 022: what open() / mkdir() would give."""
    umask = os.umask(0)
    os.umask(umask)
    return (0o777 if folder else 0o666) & ~umask


@contextmanager
def atomic_file(path: str | os.PathLike, *, suffix: str = "", mode: int | None = None) -> Iterator[Path]:
    """Yield a temporary path in `path`'s folder (created if needed) for the caller to write; when the block
    ends without error it gets `mode` (default ordinary_mode()) and is renamed to `path`, otherwise it is
    removed: `path` is written whole or not at all."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(handle)
    try:
        yield Path(temporary)
        os.chmod(temporary, ordinary_mode() if mode is None else mode)   # mkstemp makes it private (0600)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write `text` to `path` through a temporary file in the same folder renamed into place; returns path."""
    with atomic_file(path) as temporary:
        temporary.write_text(text, encoding="utf-8", newline="")
    return Path(path)


@contextmanager
def folder_lock(folder: str | os.PathLike) -> Iterator[Path]:
    """Hold an exclusive advisory flock on `folder` itself (created if needed; no lock file is left in it), so
    that processes writing the same set of files (two benches of one --name) take turns."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    handle = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield folder
    finally:
        fcntl.flock(handle, fcntl.LOCK_UN)
        os.close(handle)
