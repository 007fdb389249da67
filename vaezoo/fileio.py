"""Atomic file replacement: a kill at any instant leaves either the old file or the new one.

Every file that vaezoo writes into a run folder or an export (models, checkpoints, run state,
history, config, images) goes through :func:`atomic_path`: the content is written to a
temporary file beside the target, flushed to disk, then renamed over the target with
``os.replace`` (atomic on POSIX and Windows within one file system), and the folder entry is
flushed too. If writing fails (a full disk, an exception), the temporary file is removed and the
target is untouched.

Example:

>>> with atomic_path("runs/vae/model.keras") as tmp:
...     model.save(tmp)                 # tmp ends in .keras, as Keras requires
>>> atomic_write_text("runs/vae/state.json", json.dumps(state))
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import Iterator

#: Prefix of the temporary files (hidden; a leftover from a kill is removed by :func:`clean_partials`).
PARTIAL_PREFIX = ".partial-"


def _fsync_path(path: Path) -> None:
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) if path.is_dir() else os.O_RDONLY
    try:
        fd = os.open(path, flags)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems cannot fsync a folder
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (same suffix); on success it replaces ``path`` atomically.

    The temporary path may be a file or a folder (a SavedModel); a folder target is replaced by
    renaming the old one aside first and removing it after the new one is in place.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{PARTIAL_PREFIX}{os.getpid()}-{path.name}")
    _remove(tmp)
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"nothing was written to {tmp} for {path}")
        if tmp.is_dir():
            for item in [tmp, *tmp.rglob("*")]:
                if item.is_file():
                    _fsync_path(item)
            if path.exists():
                old = path.with_name(f"{PARTIAL_PREFIX}{os.getpid()}-old-{path.name}")
                _remove(old)
                os.replace(path, old)
                os.replace(tmp, path)
                _remove(old)
            else:
                os.replace(tmp, path)
        else:
            _fsync_path(tmp)
            os.replace(tmp, path)
        _fsync_path(path.parent)
    except BaseException:
        _remove(tmp)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns the path."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns the path."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def clean_partials(folder: str | os.PathLike) -> list[Path]:
    """Remove the temporary files that killed writers left in ``folder`` and below; returns them."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    leftovers = sorted(folder.rglob(f"{PARTIAL_PREFIX}*"))
    for item in leftovers:
        _remove(item)
    return leftovers


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
