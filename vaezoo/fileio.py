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
import re
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

    The temporary path may be a file or a folder (a SavedModel). A folder cannot be swapped in one
    rename, so a folder target is replaced in steps that a kill can interrupt anywhere without loss: the
    finished copy is renamed ``.partial-<pid>-new-<name>`` (complete from then on), the old folder
    ``.partial-<pid>-old-<name>``, the new one moves in, the old one goes. Between the two middle renames no
    folder sits at the target; :func:`recover` (called by the next write of that target, by
    :func:`recover_folder` on loading and by :func:`clean_partials`) moves the new copy in, or the old one
    back when there is no complete new copy.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{PARTIAL_PREFIX}{os.getpid()}-{path.name}")
    _remove(tmp)
    recover(path)
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"nothing was written to {tmp} for {path}")
        if tmp.is_dir():
            for item in [tmp, *tmp.rglob("*")]:
                if item.is_file():
                    _fsync_path(item)
            if path.exists():
                new, old = (path.with_name(f"{PARTIAL_PREFIX}{os.getpid()}-{kind}-{path.name}") for kind in _KINDS)
                _remove(new)
                _remove(old)
                _step("complete", os.replace, tmp, new)  # complete: recover() may move it in from here on
                _step("aside", os.replace, path, old)  # <- a kill after this leaves no folder at the target
                _step("in", os.replace, new, path)
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


#: The two names a folder replacement leaves when killed between its renames (see :func:`atomic_path`).
_KINDS = ("new", "old")
_REPLACEMENT = re.compile(rf"^{re.escape(PARTIAL_PREFIX)}(\d+)-({'|'.join(_KINDS)})-(.+)$")


def _step(name: str, function, *args) -> None:
    """One rename of a folder replacement (a named step, so that a test can kill the writer between two)."""
    function(*args)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # this process's own leftovers are from an earlier, interrupted call
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def recover(path: str | os.PathLike) -> Path | None:
    """Finish or undo a folder replacement of ``path`` that a killed writer left half done.

    When no folder sits at ``path``, the complete new copy (``.partial-<pid>-new-<name>``) moves in, else
    the old folder (``.partial-<pid>-old-<name>``) moves back; leftovers of a finished replacement are
    removed. Leftovers of a writer that is still running are left to it. Returns what moved to ``path``.
    """
    path = Path(path)
    if not path.parent.is_dir():
        return None
    found = []
    for item in path.parent.iterdir():
        match = _REPLACEMENT.match(item.name)
        if match and match.group(3) == path.name and not _alive(int(match.group(1))):
            found.append((_KINDS.index(match.group(2)), item))
    restored = None
    for _, item in sorted(found):  # a complete new copy before an old folder
        if restored is None and not path.exists():
            os.replace(item, path)
            restored = item
        else:
            _remove(item)
    if restored is not None:
        _fsync_path(path.parent)
    return restored


def recover_folder(folder: str | os.PathLike) -> list[Path]:
    """:func:`recover` every interrupted folder replacement directly inside ``folder`` (e.g. the version
    folders of a SavedModel); returns the targets put back."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    targets = {folder / m.group(3) for m in map(_REPLACEMENT.match, (p.name for p in folder.iterdir())) if m}
    return sorted(t for t in targets if recover(t) is not None)


def clean_partials(folder: str | os.PathLike) -> list[Path]:
    """Remove the temporary files that killed writers left in ``folder`` and below; returns them.

    An interrupted folder replacement is finished or undone first (:func:`recover`), never deleted.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    for parent in sorted({p.parent for p in folder.rglob(f"{PARTIAL_PREFIX}*") if _REPLACEMENT.match(p.name)}):
        recover_folder(parent)
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
