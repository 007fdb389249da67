"""Run folders: crash-safe checkpoints, resuming, one run per folder.

A run folder (``vaezoo train --out DIR``, or :func:`vaezoo.training.standard_callbacks`) holds:

* ``checkpoints/epoch_NNNN.keras``: the whole model (weights and optimizer state) after epoch N,
  the newest :data:`KEEP_CHECKPOINTS` kept; ``checkpoints/last.keras`` is the newest of them;
* ``state.json``: how many epochs are done, the checkpoint that holds them, whether the run
  finished, and (for CLI runs) the model name and config the run was started with;
* ``history.csv``: one row per finished epoch, never two rows for one epoch;
* ``config.yaml``, ``model.keras``, ``samples*.png`` (written by the CLI), TensorBoard ``logs/``.

Every file is replaced atomically (:mod:`vaezoo.fileio`): a kill at any instant leaves either
the old file or the new one, so a rerun resumes from the last finished epoch and loses at most
the epoch it was in. A ``state.json`` that cannot be read anyway (a disk error, an older vaezoo)
is not fatal: :class:`RunCheckpoint` falls back to the newest checkpoint that loads, with a
warning. Checkpoints are only written from finite weights (see
:class:`vaezoo.callbacks.TerminateOnNonFinite`).

:class:`RunLock` keeps two processes out of one folder: the second one fails at once, naming the
holder; the lock of a killed process (an OS file lock, released by the kernel) is taken over.

Example:

>>> callbacks = [vaezoo.callbacks.TerminateOnNonFinite(), vaezoo.runs.RunCheckpoint("runs/vae")]
>>> model.fit(train, epochs=10, callbacks=callbacks)   # rerun the same line to resume
"""

from __future__ import annotations

import csv
import contextlib
import fcntl
import io
import json
import os
import re
import socket
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Mapping

import keras
import numpy as np

from vaezoo import callbacks, fileio

STATE_FILE = "state.json"
HISTORY_FILE = "history.csv"
CONFIG_FILE = "config.yaml"
MODEL_FILE = "model.keras"
LOCK_FILE = ".lock"
CHECKPOINT_DIR = "checkpoints"
LAST_CHECKPOINT = "last.keras"
#: Epoch checkpoints kept in ``checkpoints/`` (the newest ones).
KEEP_CHECKPOINTS = 2
#: Version of the ``state.json`` layout.
STATE_FORMAT = 1
_EPOCH_FILE = re.compile(r"^epoch_(\d+)\.keras$")


class RunError(ValueError):
    """A run folder cannot be used as asked (locked by another run, another config, not a folder)."""


class RunLockedError(RunError):
    """Another live process holds the run folder's lock."""


class RunWarning(UserWarning):
    """Something in a run folder was unreadable and was worked around (resume state, history)."""


def checkpoint_name(epochs_done: int) -> str:
    """File name of the checkpoint written after ``epochs_done`` epochs."""
    return f"epoch_{epochs_done:04d}.keras"


def epoch_checkpoints(folder: str | os.PathLike) -> list[tuple[int, Path]]:
    """``(epochs_done, path)`` of the epoch checkpoints in ``folder/checkpoints``, newest first."""
    found = []
    directory = Path(folder) / CHECKPOINT_DIR
    if directory.is_dir():
        for path in directory.iterdir():
            match = _EPOCH_FILE.match(path.name)
            if match:
                found.append((int(match.group(1)), path))
    return sorted(found, reverse=True)


def read_state(folder: str | os.PathLike) -> dict | None:
    """The run's ``state.json``, or None if there is none.

    Raises:
        RunError: the file exists but cannot be read or parsed.
    """
    path = Path(folder) / STATE_FILE
    if not path.exists():
        return None
    try:
        state = json.loads(path.read_text())
        if not isinstance(state, dict) or not isinstance(state.get("epochs_done"), int):
            raise ValueError("not a vaezoo run state")
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise RunError(f"{path} is unreadable ({type(exc).__name__}: {exc})") from None
    return state


def write_state(folder: str | os.PathLike, state: Mapping[str, Any]) -> None:
    """Replace ``state.json`` atomically."""
    fileio.atomic_write_text(Path(folder) / STATE_FILE, json.dumps(dict(state), indent=1, default=_jsonable) + "\n")


def _jsonable(value):
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def read_history(folder: str | os.PathLike) -> list[dict]:
    """The rows of ``history.csv`` (``epoch`` an int, metrics floats); [] if absent or unreadable."""
    path = Path(folder) / HISTORY_FILE
    if not path.exists():
        return []
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        return [{k: (int(v) if k == "epoch" else float(v)) for k, v in row.items() if v not in (None, "")}
                for row in rows]
    except (OSError, ValueError, csv.Error) as exc:
        warnings.warn(f"{path} is unreadable ({exc}); the history restarts from the resumed epoch.", RunWarning,
                      stacklevel=2)
        return []


def write_history(folder: str | os.PathLike, rows: list[dict]) -> None:
    """Replace ``history.csv`` atomically: one row per epoch, columns ``epoch`` then metrics (sorted)."""
    keys = sorted({k for row in rows for k in row if k != "epoch"})
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["epoch", *keys], lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow(row)
    fileio.atomic_write_text(Path(folder) / HISTORY_FILE, buffer.getvalue())


def weights_are_finite(model: keras.Model) -> bool:
    """Whether every weight of ``model`` is finite (checked before any checkpoint is written)."""
    return all(np.isfinite(np.asarray(w.numpy())).all() for w in model.weights
               if np.issubdtype(np.dtype(w.dtype), np.floating))


class RunCheckpoint(keras.callbacks.Callback):
    """Crash-safe epoch checkpoints of a run folder, and resuming from them.

    At the end of every epoch, from finite weights only, it writes (each file atomically)
    ``checkpoints/epoch_NNNN.keras``, ``checkpoints/last.keras``, ``history.csv`` and then
    ``state.json``, the commit point: a kill before it leaves the previous epoch's state. At the
    start of ``fit`` it restores the weights and optimizer state of the newest good checkpoint and
    makes ``fit`` start at the next epoch, as Keras' ``BackupAndRestore`` does.

    Args:
        folder: the run folder.
        run_info: what identifies the run (CLI: model name and config), stored in ``state.json``.
        fresh: ignore an earlier run in the folder; its checkpoints, ``model.keras`` and samples
            are removed once this run has written its first checkpoint (so an early failure of
            the new run leaves the old one intact).
        keep: how many epoch checkpoints to keep.
        on_commit: called with the folder after the first checkpoint of this run is committed
            (the CLI writes ``config.yaml`` there).
    """

    def __init__(self, folder: str | os.PathLike, run_info: Mapping[str, Any] | None = None, fresh: bool = False,
                 keep: int = KEEP_CHECKPOINTS, on_commit=None):
        super().__init__()
        if keep < 1:
            raise ValueError(f"keep must be >= 1, got {keep}.")
        self.folder = Path(folder)
        self.run_info = dict(run_info or {})
        self.fresh = fresh
        self.keep = int(keep)
        self.on_commit = on_commit
        self.history: list[dict] = []
        self.epochs_done = 0
        #: The checkpoint restored at the start of ``fit`` (None for a fresh start).
        self.restored_from: Path | None = None
        self._committed = False

    # ---- resume -----------------------------------------------------------------------------

    def on_train_begin(self, logs=None):
        self.folder.mkdir(parents=True, exist_ok=True)
        fileio.clean_partials(self.folder)
        if self.fresh:
            self.history, self.epochs_done = [], 0
            return
        epochs_done, path = self._resume_point()
        if path is None:
            return
        model = self.model
        if model.optimizer is not None and not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        model.load_weights(path)
        model._initial_epoch = epochs_done  # where fit() starts (what BackupAndRestore sets)
        self.epochs_done, self.restored_from = epochs_done, path
        self.history = [row for row in read_history(self.folder) if row.get("epoch", -1) < epochs_done]

    def _resume_point(self) -> tuple[int, Path | None]:
        """The newest checkpoint that loads: the one ``state.json`` names, else the newest epoch file."""
        candidates: list[tuple[int, Path]] = []
        try:
            state = read_state(self.folder)
        except RunError as exc:
            warnings.warn(f"{exc}; resuming from the newest checkpoint that loads instead.", RunWarning, stacklevel=2)
            state = None
        if state is not None and state.get("checkpoint"):
            candidates.append((state["epochs_done"], self.folder / state["checkpoint"]))
        candidates += [c for c in epoch_checkpoints(self.folder) if c not in candidates]
        for epochs_done, path in candidates:
            if self._loadable(path):
                return epochs_done, path
            warnings.warn(f"checkpoint {path} is unreadable; trying an older one.", RunWarning, stacklevel=2)
        if candidates:
            warnings.warn(f"no checkpoint in {self.folder / CHECKPOINT_DIR} could be read; training starts from "
                          "scratch.", RunWarning, stacklevel=2)
        return 0, None

    def _loadable(self, path: Path) -> bool:
        # Load into a copy of the model first: a half-loaded model would be worse than none.
        if not path.is_file():
            return False
        try:
            probe = keras.models.load_model(path, compile=False)
        except Exception:  # noqa: BLE001  (any failure to read means: not this checkpoint)
            return False
        return [tuple(w.shape) for w in probe.weights] == [tuple(w.shape) for w in self.model.weights]

    # ---- commit -----------------------------------------------------------------------------

    def on_epoch_end(self, epoch, logs=None):
        if not weights_are_finite(self.model):
            raise callbacks.NonFiniteLossError(epoch=epoch, step=None, name="a weight", value=float("nan"),
                                               learning_rate=callbacks._learning_rate(self.model))
        epochs_done = epoch + 1
        row = {"epoch": epoch, **{k: float(v) for k, v in (logs or {}).items() if _is_number(v)}}
        self.history = [r for r in self.history if r.get("epoch") != epoch] + [row]
        checkpoints = self.folder / CHECKPOINT_DIR
        path = checkpoints / checkpoint_name(epochs_done)
        with fileio.atomic_path(path) as tmp:
            self.model.save(tmp)
        self._link_last(path)
        write_history(self.folder, self.history)
        state = {
            "format": STATE_FORMAT,
            "vaezoo_version": _version(),
            **self.run_info,
            "epochs_done": epochs_done,
            "checkpoint": f"{CHECKPOINT_DIR}/{path.name}",
            "finished": False,
            "updated": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        write_state(self.folder, state)  # the commit point
        self.epochs_done = epochs_done
        if not self._committed:
            self._committed = True
            if self.fresh:
                self._remove_previous_run(keep=path)
            if self.on_commit is not None:
                self.on_commit(self.folder)
        for _, old in epoch_checkpoints(self.folder)[self.keep:]:
            old.unlink(missing_ok=True)

    def _link_last(self, path: Path) -> None:
        last = path.with_name(LAST_CHECKPOINT)
        with fileio.atomic_path(last) as tmp:
            try:
                os.link(path, tmp)  # a second name for the same file: no copy
            except OSError:
                tmp.write_bytes(path.read_bytes())

    def _remove_previous_run(self, keep: Path) -> None:
        for _, old in epoch_checkpoints(self.folder):
            if old != keep:
                old.unlink(missing_ok=True)
        for name in (MODEL_FILE, "samples.png", "samples_reconstructions.png", "samples_traversal.png"):
            (self.folder / name).unlink(missing_ok=True)


def mark_finished(folder: str | os.PathLike, epochs: int) -> None:
    """Record in ``state.json`` that the run finished ``epochs`` epochs and wrote its model."""
    state = read_state(folder) or {}
    state.update(finished=True, epochs_done=int(epochs), updated=time.strftime("%Y-%m-%dT%H:%M:%S"))
    write_state(folder, state)


def config_differences(old: Mapping[str, Any], new: Mapping[str, Any], ignore=("epochs",)) -> list[str]:
    """``key: old -> new`` for every key whose value differs between two run descriptions."""

    def norm(value):
        if isinstance(value, (list, tuple)):
            return [norm(v) for v in value]
        if isinstance(value, Mapping):
            return {k: norm(v) for k, v in value.items()}
        return value

    out = []
    for key in sorted(set(old) | set(new)):
        if key in ignore:
            continue
        a, b = norm(old.get(key, "<unset>")), norm(new.get(key, "<unset>"))
        if isinstance(a, dict) and isinstance(b, dict):
            out += [f"{key}.{line}" for line in config_differences(a, b, ignore)]
        elif a != b:
            out.append(f"{key}: {a!r} -> {b!r}")
    return out


def claim(folder: str | os.PathLike, description: Mapping[str, Any], filename: str = "description.json") -> None:
    """Record ``description`` (JSON) as the settings of the run in ``folder``, or raise :class:`RunError`
    naming the differences if the folder already holds a run with other settings."""
    path = Path(folder) / filename
    if path.is_file():
        differences = config_differences(json.loads(path.read_text()), description, ignore=())
        if differences:
            raise RunError(f"{folder} holds a run with other settings ({'; '.join(differences)}); use another --out.")
    fileio.atomic_write_text(path, json.dumps(description, indent=1))


@contextlib.contextmanager
def open_run(folder: str | os.PathLike, description: Mapping[str, Any]):
    """Lock a run folder (:class:`RunLock`) and :func:`claim` it for ``description``; both raise
    :class:`RunError` (another live process holds it / it holds a run with other settings).

    >>> with open_run("runs/study/vae/seed0", {"steps": 2000}):
    ...     ...                                 # train, resume or read the finished result
    """
    with RunLock(folder) as lock:
        claim(folder, description)
        yield lock


class RunLock:
    """An exclusive lock on a run folder (``.lock``, an OS file lock released when the process ends).

    >>> with RunLock("runs/vae") as lock:   # RunLockedError if another live process holds it
    ...     ...
    ``lock.previous`` describes the holder of a stale lock that was taken over (a killed run).
    """

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_FILE
        self.previous: dict | None = None
        self._fd: int | None = None

    def acquire(self) -> "RunLock":
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = _describe(_read_holder(fd))
            os.close(fd)
            raise RunLockedError(
                f"run folder {self.folder} is in use by {holder}; wait for it to end, stop it, or train into "
                "another --out."
            ) from None
        self.previous = _read_holder(fd) or None
        info = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
                "command": " ".join(["vaezoo", *sys.argv[1:]]) if sys.argv else "vaezoo"}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing drops the lock
            self._fd = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


def _read_holder(fd: int) -> dict:
    try:
        raw = os.pread(fd, 4096, 0)
        return json.loads(raw) if raw.strip() else {}
    except (OSError, ValueError):
        return {}


def _describe(holder: dict) -> str:
    if not holder:
        return "another process"
    return (f"pid {holder.get('pid')} on {holder.get('host')} (started {holder.get('started')}: "
            f"{holder.get('command')})")


def _is_number(value) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return np.ndim(value) == 0


def _version() -> str:
    from vaezoo import __version__

    return __version__

