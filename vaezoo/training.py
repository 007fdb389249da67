"""Training recipe from a config: the optimizer and the standard callbacks."""

from __future__ import annotations

import os
from typing import Any, Mapping

import keras

OPTIMIZERS = {
    "adam": keras.optimizers.Adam,
    "adamw": keras.optimizers.AdamW,
    "rmsprop": keras.optimizers.RMSprop,
    "sgd": keras.optimizers.SGD,
}


def make_optimizer(config: Mapping[str, Any]) -> keras.optimizers.Optimizer:
    """The optimizer named by ``config["optimizer"]`` with ``config["learning_rate"]``."""
    name = config.get("optimizer", "adam")
    if name not in OPTIMIZERS:
        raise ValueError(f"Unknown optimizer {name!r}; valid choices: {', '.join(sorted(OPTIMIZERS))}.")
    return OPTIMIZERS[name](learning_rate=config.get("learning_rate", 1e-3))


def standard_callbacks(out_dir: str | os.PathLike) -> list[keras.callbacks.Callback]:
    """Checkpoints, resume-after-interruption, TensorBoard logs and a CSV log under ``out_dir``.

    * ``out_dir/checkpoints/last.keras``: the whole model (with optimizer state) after each epoch;
    * ``out_dir/backup/``: ``BackupAndRestore`` state, so a rerun of an interrupted ``fit``
      resumes at the epoch where it stopped;
    * ``out_dir/logs/``: TensorBoard; ``out_dir/history.csv``: the metrics of each epoch.
    """
    out_dir = os.fspath(out_dir)
    os.makedirs(os.path.join(out_dir, "checkpoints"), exist_ok=True)
    return [
        keras.callbacks.BackupAndRestore(os.path.join(out_dir, "backup")),
        keras.callbacks.ModelCheckpoint(os.path.join(out_dir, "checkpoints", "last.keras")),
        keras.callbacks.TensorBoard(os.path.join(out_dir, "logs")),
        keras.callbacks.CSVLogger(os.path.join(out_dir, "history.csv"), append=True),
    ]
