"""Training recipe from a config: precision policy, optimizer, compile settings, standard callbacks."""

from __future__ import annotations

import contextlib
import os
from typing import Any, Mapping

import keras

from vaezoo import callbacks, runs
from vaezoo import config as zconfig

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
PRECISIONS = zconfig.PRECISIONS


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


def standard_callbacks(out_dir: str | os.PathLike, **run_options) -> list[keras.callbacks.Callback]:
    """The callbacks of a crash-safe run folder ``out_dir`` (see :mod:`vaezoo.runs`), in this order:

    * :class:`vaezoo.callbacks.TerminateOnNonFinite`: stop at the first non-finite loss, before any
      checkpoint is written from it;
    * :class:`vaezoo.runs.RunCheckpoint`: ``checkpoints/epoch_NNNN.keras`` and ``checkpoints/last.keras``
      (the whole model with optimizer state), ``history.csv`` and ``state.json`` after each epoch,
      each written atomically; a rerun of an interrupted ``fit`` resumes after the last finished epoch;
    * ``keras.callbacks.TensorBoard`` logs in ``out_dir/logs/``.

    ``run_options`` go to :class:`vaezoo.runs.RunCheckpoint` (``run_info``, ``fresh``, ``on_commit``).
    """
    out_dir = os.fspath(out_dir)
    return [
        callbacks.TerminateOnNonFinite(),
        runs.RunCheckpoint(out_dir, **run_options),
        keras.callbacks.TensorBoard(os.path.join(out_dir, "logs")),
    ]
