"""Honest log-likelihood evaluation for continuous-latent models.

The importance-sampled estimate of the marginal likelihood, with q(z|x) as proposal:

.. math::

    \\log p(x) \\approx \\log \\frac{1}{S} \\sum_{s=1}^S \\frac{p(x|z_s)\\, p(z_s)}{q(z_s|x)},
    \\qquad z_s \\sim q(z|x).

It is the S-sample IWAE bound L_S, so it is a stochastic lower bound on log p(x) in expectation,
and it converges to log p(x) as S grows (Burda et al. 2016, section 5 use S = 5000). The S samples
are drawn in chunks and combined with a running log-sum-exp, so that S = 5000 fits in memory.

Example:

>>> from vaezoo import data, evaluate
>>> test = data.load("mnist", "test", batch_size=100, binarize="dynamic", seed=0)
>>> result = evaluate.log_likelihood(model, test, num_samples=5000)
>>> result.nll, result.bits_per_dim   # nats per example, bits per dimension

Reference: Burda, Grosse & Salakhutdinov, "Importance Weighted Autoencoders", ICLR 2016.
"""

from __future__ import annotations

import dataclasses
import math

import keras
import numpy as np
import tensorflow as tf

from vaezoo import distribute


@dataclasses.dataclass(frozen=True)
class LogLikelihood:
    """The estimate: per-example log p(x) and its summaries."""

    per_example: np.ndarray  # log p(x) estimates, nats, one per example
    num_samples: int
    num_dims: int  # dimensions of one example, for bits per dimension

    @property
    def mean(self) -> float:
        """Mean estimated log p(x), nats per example."""
        return float(np.mean(self.per_example))

    @property
    def nll(self) -> float:
        """Mean negative log-likelihood, nats per example (the number papers report)."""
        return -self.mean

    @property
    def bits_per_dim(self) -> float:
        """-log2 p(x) / D."""
        return self.nll / (self.num_dims * math.log(2.0))

    @property
    def standard_error(self) -> float:
        """Standard error of the mean over examples (not including the per-example Monte-Carlo error)."""
        return float(np.std(self.per_example) / math.sqrt(max(len(self.per_example), 1)))


def _batches(data, batch_size, conditional: bool = False):
    """Batches of images, or for a conditional model ``{"images", "labels"}`` dicts (from ``(x, y)`` batches of a
    data set, a dict of arrays or an ``(x, y)`` pair of arrays)."""
    if isinstance(data, tf.data.Dataset):
        for batch in data:
            x, y, _ = keras.utils.unpack_x_y_sample_weight(batch)
            if conditional and not isinstance(x, dict):
                if y is None:
                    raise ValueError("a conditional model's log p(x|y) needs (images, labels) batches "
                                     "(load the data with labels=True).")
                x = {"images": x, "labels": y}
            yield x
        return
    if conditional:
        if isinstance(data, (tuple, list)) and len(data) == 2:
            data = {"images": data[0], "labels": data[1]}
        if not isinstance(data, dict):
            raise ValueError("a conditional model's log p(x|y) needs the labels: pass {'images': x, 'labels': y}, "
                             "(x, y) arrays or a data set of (images, labels) batches.")
        arrays = {k: np.asarray(v) for k, v in data.items()}
        for start in range(0, len(arrays["images"]), batch_size):
            yield {k: v[start : start + batch_size] for k, v in arrays.items()}
        return
    array = np.asarray(data["images"] if isinstance(data, dict) and "images" in data else data)
    for start in range(0, len(array), batch_size):
        yield array[start : start + batch_size]


def log_likelihood(
    model,
    data,
    num_samples: int = 5000,
    batch_size: int = 100,
    chunk_size: int | None = None,
    max_chunk_elements: int = 2**25,
    seed: int = 0,
    jit_compile: bool | str = False,
) -> LogLikelihood:
    """Importance-sampled estimate of log p(x) for every example of ``data``.

    Args:
        model: a continuous-latent vaezoo model (one with ``log_weights(x, num_samples, seed)``,
            e.g. :class:`vaezoo.VAE`, :class:`vaezoo.BetaVAE`, :class:`vaezoo.IWAE`).
        data: a ``tf.data.Dataset`` of batches (or ``(x, y)`` pairs) or an array of examples. A conditional
            model (``uses_condition``, e.g. ``cvae``) gets log p(x|y): ``(images, labels)`` batches, a dict
            ``{"images": x, "labels": y}`` or an ``(x, y)`` pair of arrays. A model whose labels are a latent
            variable (``labels_optional``: ``m2``) gets the marginal log p(x) of the images; labels are ignored.
        num_samples: S, importance samples per example.
        batch_size: examples per batch when ``data`` is an array.
        chunk_size: samples drawn at once; by default as many as keep
            ``chunk * batch * dims <= max_chunk_elements``.
        max_chunk_elements: memory budget of one chunk, in decoder output values.
        seed: seeds the samples (chunk c of batch b uses the stateless seed (seed, b, c)).
        jit_compile: compile each chunk with XLA (``"auto"``: as the model trains, its compiled ``jit_compile``
            or what ``compile()`` would pick). Off by default: on a 2-core CPU the 5000-sample NLL of ``vae`` and
            ``iwae`` runs at 168k-178k importance samples/s without XLA and 64k-69k with it
            (``benchmarks/eval_speed.py``, docs/eval_speed.json). XLA's stateless generator draws other samples,
            so the two give different (equally valid) estimates from one seed.

    Returns:
        :class:`LogLikelihood` with ``mean``, ``nll`` (nats per example) and ``bits_per_dim``.
    """
    if not hasattr(model, "log_weights"):
        raise TypeError(
            f"log_likelihood needs a continuous-latent model with a log_weights method (VAE, BetaVAE, IWAE); "
            f"{type(model).__name__} has none."
        )
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}.")
    num_dims = int(np.prod(model.data_shape))
    jit = resolve_jit_compile(model, jit_compile)

    @tf.function(jit_compile=jit)
    def chunk_logsumexp(x, n, seed_pair):
        return tf.reduce_logsumexp(model.log_weights(x, n, seed=seed_pair), axis=0)

    results = []
    # A model whose labels may be missing (``labels_optional``: the semi-supervised m2) estimates the marginal
    # log p(x) from images alone.
    conditional = getattr(model, "uses_condition", False) and not getattr(model, "labels_optional", False)
    for b, x in enumerate(_batches(data, batch_size, conditional)):
        x = tf.nest.map_structure(tf.convert_to_tensor, x)
        rows = int(tf.nest.flatten(x)[0].shape[0])
        chunk = chunk_size or max(1, min(num_samples, max_chunk_elements // max(rows * num_dims, 1)))
        total = tf.fill([rows], -np.inf)
        drawn, c = 0, 0
        while drawn < num_samples:
            n = min(chunk, num_samples - drawn)
            seed_pair = tf.constant([seed, (b * 1_000_003 + c) % (2**31 - 1)], dtype=tf.int32)
            total = tf.experimental.numpy.logaddexp(total, chunk_logsumexp(x, n, seed_pair))
            drawn, c = drawn + n, c + 1
        results.append((total - math.log(num_samples)).numpy())
    if not results:
        raise ValueError("log_likelihood got no data.")
    return LogLikelihood(np.concatenate(results), num_samples, num_dims)


def resolve_jit_compile(model, jit_compile: bool | str = "auto") -> bool:
    """Whether an evaluation of ``model`` runs under XLA: ``jit_compile`` if it is a bool, else (``"auto"``) the
    model's compiled setting, or for an uncompiled model the one ``compile()`` would pick on this device."""
    if isinstance(jit_compile, bool):
        return jit_compile
    if jit_compile != "auto":
        raise ValueError(f"jit_compile must be 'auto', True or False, got {jit_compile!r}.")
    if getattr(model, "compiled", False) and isinstance(getattr(model, "jit_compile", None), bool):
        return model.jit_compile
    return distribute.resolve_compile("auto", "auto", tf.distribute.get_strategy(),
                                      xla_by_default=getattr(model, "xla_by_default", True))[0]


def gradient_statistics(model, x, num_draws: int = 1000, seed: int = 0) -> dict[str, np.ndarray]:
    """Mean and variance, over ``num_draws`` seeds, of the training gradient of every trainable weight.

    The gradient is the one ``fit`` would use on the fixed batch ``x``: that of ``objective +
    gradient_surrogate`` for the main variables and that of ``auxiliary_loss`` for a family's auxiliary
    variables (the inference network of DReG, PIWAE and RWS; a discriminator), the score-function
    baseline used but not updated. Compares gradient estimators: their means must agree (both unbiased);
    their variances show which is noisier.

    Returns:
        ``{"mean": [P], "variance": [P]}`` over the P trainable scalars (in ``model.trainable_variables``'
        order), flattened.
    """
    x = model.check_inputs(x)
    variables = model.trainable_variables
    auxiliary = {id(v) for v in model.auxiliary_variables()}
    main = [v for v in variables if id(v) not in auxiliary]
    aux = [v for v in variables if id(v) in auxiliary]

    @tf.function
    def one(seed_pair):
        with tf.GradientTape(persistent=True) as tape:
            terms = model.compute_terms(x, training=False, seed=seed_pair)
            loss = model.objective(terms) + model.gradient_surrogate(terms, training=False)
            aux_loss = model.auxiliary_loss(terms) if aux else None
        grads = dict(zip([id(v) for v in main], tape.gradient(loss, main)))
        if aux:
            grads.update(zip([id(v) for v in aux], tape.gradient(aux_loss, aux)))
        del tape
        return tf.concat([tf.reshape(tf.zeros_like(v) if grads[id(v)] is None else grads[id(v)], [-1])
                          for v in variables], 0)

    draws = np.stack([one(tf.constant([seed, i], dtype=tf.int32)).numpy() for i in range(num_draws)])
    return {"mean": draws.mean(0), "variance": draws.var(0, ddof=1)}
