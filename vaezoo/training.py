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


#: Likelihoods whose decoder output has a per-pixel link that :func:`init_output_bias` can invert: the
#: Bernoulli's logits (the log-odds of the mean) and the Gaussians' mean (the identity).
OUTPUT_BIAS_LINKS = ("bernoulli", "gaussian", "gaussian_learned_scale")


def data_mean(data, max_batches: int | None = None):
    """The per-pixel mean ``[*data_shape]`` (float64 NumPy) of an array of examples or a ``tf.data`` pipeline of
    batches (``x``, ``(x, y)`` or ``(x, y, weights)``); ``max_batches`` reads only the first batches."""
    import numpy as np
    import tensorflow as tf

    if not isinstance(data, tf.data.Dataset):
        x = np.asarray(data, dtype="float64")
        return x.mean(axis=0)
    total, count = None, 0
    for i, batch in enumerate(data):
        if max_batches is not None and i >= max_batches:
            break
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        x = np.asarray(x, dtype="float64")
        total = x.sum(axis=0) if total is None else total + x.sum(axis=0)
        count += x.shape[0]
    if not count:
        raise ValueError("data_mean: the data set yielded no examples.")
    return total / count


def init_output_bias(model: keras.Model, data, clip: float = 1e-3, max_batches: int | None = None):
    """Set the bias of the decoder's output layer so that p(x|z) starts at the training data's mean image.

    For a Bernoulli likelihood the bias becomes the log-odds of the per-pixel mean,
    b_i = log(m_i / (1 - m_i)) with m_i clipped to [clip, 1 - clip]; for a Gaussian likelihood the mean itself. A
    convolutional decoder's last layer has one bias per channel: it gets the channel's mean. This is how Burda et
    al. initialise their models (the reference code sets the output bias to the log-odds of the training mean):
    the decoder then starts at the mean image instead of spending its first steps there, steps large enough to
    saturate a tanh decoder's hidden units before z is used. Measured on Burda et al.'s two-stochastic-layer
    network (docs/results.md): without it, `ladder_vae` with a KL warm-up collapsed (KL 0.03 nats after 10
    epochs, reconstruction stuck at the mean image's 206 nats); with it, the same run learns from the first epoch.

    Args:
        model: a vaezoo model with a ``decoder`` whose last layer with a bias is the output layer (``vae``, the
            beta/IWAE/flow/prior variants, the conditional and two-layer models), and a likelihood in
            :data:`OUTPUT_BIAS_LINKS`.
        data: training examples: an array ``[N, *data_shape]`` or a ``tf.data`` pipeline of batches.
        clip: the Bernoulli mean is clipped to [clip, 1 - clip] (Burda et al.: 0.001).
        max_batches: read only this many batches of a pipeline.

    Returns:
        the bias set, a NumPy array.

    Example:

    >>> model = vaezoo.get("vae_2layer")
    >>> vaezoo.training.init_output_bias(model, train)   # before model.fit(train, ...)

    Reference: Burda, Grosse & Salakhutdinov, "Importance Weighted Autoencoders", ICLR 2016 (their code's
    ``get_train_bias_np``).
    """
    import numpy as np

    likelihood = getattr(model, "likelihood", None)
    if likelihood not in OUTPUT_BIAS_LINKS:
        raise ValueError(f"init_output_bias: model {model.name!r} has likelihood {likelihood!r}; the output bias can "
                         f"be set from the data for {', '.join(OUTPUT_BIAS_LINKS)}.")
    decoder = getattr(model, "decoder", None)
    layers = [l for l in (decoder._flatten_layers() if decoder is not None else ())
              if getattr(l, "use_bias", False) and getattr(l, "bias", None) is not None]
    if not layers:
        raise ValueError(f"init_output_bias: model {model.name!r} has no decoder output layer with a bias "
                         f"(type {type(model).__name__}).")
    layer = layers[-1]
    mean = data_mean(data, max_batches=max_batches)
    shape = tuple(getattr(model, "data_shape", mean.shape))
    if mean.shape != shape:
        raise ValueError(f"init_output_bias: the data's examples have shape {mean.shape}, the model "
                         f"{model.name!r} expects {shape}.")
    size = int(np.prod(layer.bias.shape))
    if size == mean.size:
        target = mean.reshape(-1)
    elif size == shape[-1]:
        target = mean.reshape(-1, shape[-1]).mean(axis=0)  # one bias per channel (a convolutional output)
    else:
        raise ValueError(f"init_output_bias: the output layer {layer.name!r} of {model.name!r} has {size} biases, "
                         f"neither one per pixel ({mean.size}) nor one per channel ({shape[-1]}).")
    if likelihood == "bernoulli":
        target = np.clip(target, clip, 1.0 - clip)
        target = np.log(target) - np.log1p(-target)
    bias = target.reshape(layer.bias.shape).astype("float32")
    layer.bias.assign(bias)
    return bias
