"""The importance-weighted autoencoder (IWAE).

Trains on the K-sample importance-weighted bound

.. math::

    \\mathcal{L}_K(x) = \\mathbb{E}_{z_1..z_K \\sim q(z|x)}
        \\Big[\\log \\frac{1}{K} \\sum_{k=1}^K \\frac{p(x|z_k)\\, p(z_k)}{q(z_k|x)}\\Big],

computed stably as logsumexp_k(log w_k) - log K. L_1 is the ELBO, and
log p(x) >= L_{K+1} >= L_K (Burda et al. 2016, Theorem 1), so a larger K gives a tighter bound
and a posterior that need not cover the true one as tightly. Reuses :class:`vaezoo.VAE`'s
distributions, sampling and train step; the bound is :func:`vaezoo.bounds.iwae_bound` of the
log-weights, which other families (hierarchies, conditional models) call the same way.

Example:

>>> import keras, vaezoo
>>> model = vaezoo.get("iwae", num_samples=50)
>>> model.compile(keras.optimizers.Adam(1e-3, epsilon=1e-4))
>>> # model.fit(dataset)   # metrics: loss, iwae_bound, elbo, reconstruction, kl

Reference:
    Burda, Grosse & Salakhutdinov, "Importance Weighted Autoencoders", ICLR 2016.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from vaezoo import bounds
from vaezoo.models.vae import VAE
from vaezoo.registry import register_model


@keras.saving.register_keras_serializable(package="vaezoo")
class IWAE(VAE):
    """Importance-weighted autoencoder: a VAE trained on the K-sample bound L_K.

    The KL warm-up weight (:class:`vaezoo.callbacks.KLWarmup`) multiplies log p(z) - log q(z|x)
    inside each log-weight. The ``elbo`` metric uses the same K samples.

    Args:
        num_samples: K, importance samples per example (default 5).
        **kwargs: as :class:`vaezoo.VAE`.
    """

    metric_names = ("iwae_bound", "elbo", "reconstruction", "kl")
    #: Trains faster without XLA on a CPU (K decoders of tanh layers; docs/results.md#training-throughput).
    xla_by_default = False

    def __init__(self, num_samples: int = 5, **kwargs):
        super().__init__(num_samples=num_samples, **kwargs)

    def compute_terms(self, x, training=False, seed=None, condition=None):
        terms = super().compute_terms(x, training=training, seed=seed, condition=condition)
        log_w = bounds.log_weights(terms["log_px"], terms["log_pz"], terms["log_qz"], self.kl_weight)
        terms["iwae_bound"] = bounds.iwae_bound(log_w)
        return terms

    def objective(self, terms):
        return -tf.reduce_mean(terms["iwae_bound"])

    def score_signal(self, terms):
        # L_K depends on every z_k jointly: the signal of each sample is the whole bound.
        return tf.broadcast_to(terms["iwae_bound"], tf.shape(terms["log_qz"])), 1.0

    def iwae_bound(self, x, seed=None):
        """The K-sample bound per example, ``[B]`` (nats)."""
        return self.compute_terms(x, training=False, seed=seed)["iwae_bound"]


register_model(IWAE, name="iwae")
register_model(IWAE, name="iwae_conv")
