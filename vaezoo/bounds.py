"""Bounds on log p(x) as functions of importance log-weights, for any model that produces them.

Every continuous-latent bound in vaezoo is a function of the log-weights of K samples
z_1..K ~ q(z|x),

.. math:: \\log w_k = \\log p(x|z_k) + \\log p(z_k) - \\log q(z_k|x),

shaped ``[K, B]`` (samples first). A family that computes them (one stochastic layer, a hierarchy,
a conditional model, a posterior with flows) gets the ELBO and the importance-weighted bound from
here instead of inheriting them from :class:`vaezoo.VAE`.

* :func:`elbo`: (1/K) sum_k log w_k, the K-sample Monte-Carlo ELBO (Kingma & Welling 2014, eq. 8);
* :func:`iwae_bound`: log (1/K) sum_k w_k, computed as logsumexp_k(log w_k) - log K; L_1 is the
  ELBO and log p(x) >= L_{K+1} >= L_K (Burda et al. 2016, Theorem 1).

Example:

>>> import tensorflow as tf
>>> from vaezoo import bounds
>>> log_w = bounds.log_weights(log_px, log_pz, log_qz)        # doctest: +SKIP  ([K, B] each)
>>> bounds.iwae_bound(log_w), bounds.elbo(log_w)              # doctest: +SKIP  ([B] each)

References:
    Kingma & Welling, "Auto-Encoding Variational Bayes", ICLR 2014.
    Burda, Grosse & Salakhutdinov, "Importance Weighted Autoencoders", ICLR 2016.
"""

from __future__ import annotations

import math

import tensorflow as tf


def log_weights(log_px, log_pz, log_qz, kl_weight=1.0) -> tf.Tensor:
    """log p(x|z) + w (log p(z) - log q(z|x)), ``[K, B]``; ``kl_weight`` w < 1 during a KL warm-up."""
    return log_px + kl_weight * (log_pz - log_qz)


def elbo(log_w, axis: int = 0) -> tf.Tensor:
    """The Monte-Carlo ELBO: the mean of the log-weights over the sample ``axis``."""
    return tf.reduce_mean(log_w, axis=axis)


def iwae_bound(log_w, axis: int = 0) -> tf.Tensor:
    """The importance-weighted bound L_K = logsumexp(log w) - log K over the sample ``axis`` (K static or dynamic)."""
    k = log_w.shape[axis]
    log_k = math.log(k) if k is not None else tf.math.log(tf.cast(tf.shape(log_w)[axis], log_w.dtype))
    return tf.reduce_logsumexp(log_w, axis=axis) - log_k
