"""Training recipe from a config: precision policy, optimizer, compile settings, standard callbacks."""

from __future__ import annotations

import contextlib
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


#: Keras dtype policies a model can be built under (config key ``mixed_precision``).
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")


@contextlib.contextmanager
def precision(policy: str = "float32"):
    """Build models under the Keras dtype policy ``policy`` (one of :data:`PRECISIONS`), then restore.

    Under ``mixed_float16``/``mixed_bfloat16`` the networks compute in 16 bits with float32
    variables; vaezoo's distribution layers stay float32, so log-probabilities, KL terms and
    losses are float32. ``vaezoo.get(name, mixed_precision=...)`` uses this.

    >>> with vaezoo.training.precision("mixed_bfloat16"):
    ...     model = vaezoo.get("vae")
    """
    if policy not in PRECISIONS:
        raise ValueError(f"Unknown mixed_precision {policy!r}; valid choices: {', '.join(PRECISIONS)}.")
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def compile_model(model: keras.Model, config: Mapping[str, Any]) -> keras.Model:
    """``model.compile`` with the config's optimizer, ``jit_compile`` and ``steps_per_execution``.

    ``mixed_float16`` models get Keras' ``LossScaleOptimizer`` from ``compile`` itself.
    """
    model.compile(make_optimizer(config), jit_compile=config.get("jit_compile", "auto"),
                  steps_per_execution=config.get("steps_per_execution", "auto"))
    return model


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
