"""DIP-VAE: the ELBO plus a penalty pushing the covariance of the aggregate posterior towards identity.

Disentangled Inferred Prior VAE (Kumar, Sattigeri & Balakrishnan 2018) matches the moments of the
aggregate posterior :math:`q(z) = \\mathbb{E}_{p(x)}[q(z|x)]` to the prior N(0, I) by adding

.. math::

    \\lambda_{od} \\sum_{i \\ne j} [C]_{ij}^2 + \\lambda_d \\sum_i ([C]_{ii} - 1)^2

to the negative ELBO, where C is estimated on the minibatch:

* DIP-VAE-I: :math:`C = \\mathrm{Cov}_{p(x)}[\\mu(x)]`, the covariance of the posterior means;
* DIP-VAE-II: :math:`C = \\mathrm{Cov}_{q(z)}[z] = \\mathbb{E}_{p(x)}[\\Sigma(x)] + \\mathrm{Cov}_{p(x)}[\\mu(x)]`.

Example:

>>> import keras, vaezoo
>>> model = vaezoo.get("dip_vae", dip_type="i", lambda_od=10.0, lambda_d=100.0)   # 64x64 sprites
>>> model.compile(keras.optimizers.Adam(1e-4))
>>> # model.fit(data.load("sprites_grid"))   # metrics: ..., dip_regularizer

Reference:
    Kumar, Sattigeri & Balakrishnan, "Variational Inference of Disentangled Latent Concepts from
    Unlabeled Observations", ICLR 2018 (equations 7 and 9).
"""

from __future__ import annotations

import keras
import tensorflow as tf

from vaezoo import config as cfg
from vaezoo import distribute
from vaezoo.models.vae import VAE
from vaezoo.registry import register_model

DIP_TYPES = ("i", "ii")


def dip_covariance(means, stddevs, dip_type: str = "i") -> tf.Tensor:
    """The ``[d, d]`` covariance that DIP-VAE regularises, from a batch of posteriors ``[M, d]``.

    Type ``"i"``: the (biased, 1/M) covariance of the means; ``"ii"``: that plus the mean of the
    posterior variances on the diagonal.
    """
    if dip_type not in DIP_TYPES:
        raise ValueError(f"Unknown dip_type {dip_type!r}; valid choices: {', '.join(DIP_TYPES)}.")
    centred = means - tf.reduce_mean(means, axis=0, keepdims=True)
    covariance = tf.matmul(centred, centred, transpose_a=True) / tf.cast(tf.shape(means)[0], means.dtype)
    if dip_type == "ii":
        covariance += tf.linalg.diag(tf.reduce_mean(tf.square(stddevs), axis=0))
    return covariance


def dip_regularizer(covariance, lambda_od: float, lambda_d: float) -> tf.Tensor:
    """lambda_od * sum of squared off-diagonal entries + lambda_d * sum of (diagonal - 1)^2."""
    diagonal = tf.linalg.diag_part(covariance)
    off_diagonal = covariance - tf.linalg.diag(diagonal)
    return lambda_od * tf.reduce_sum(tf.square(off_diagonal)) + lambda_d * tf.reduce_sum(tf.square(diagonal - 1.0))


@keras.saving.register_keras_serializable(package="vaezoo")
class DIPVAE(VAE):
    """DIP-VAE (types I and II): the negative ELBO plus the moment-matching penalty of q(z).

    ``dip_regularizer`` is a metric (a batch statistic, not per example); ``elbo`` is the
    unpenalised ELBO. Under a ``tf.distribute`` strategy the covariance is that of the global batch.

    Args:
        dip_type: ``"i"`` (covariance of the posterior means) or ``"ii"`` (covariance of z).
        lambda_od: weight of the off-diagonal entries (disentanglement_lib sweeps 1..50).
        lambda_d: weight of the diagonal (disentanglement_lib: 10 lambda_od for type I, lambda_od for II).
        **kwargs: as :class:`vaezoo.VAE`.
    """

    metric_names = ("elbo", "reconstruction", "kl", "dip_regularizer")
    config_constraints = {"dip_type": cfg.OneOf(DIP_TYPES), "lambda_od": cfg.NON_NEGATIVE,
                          "lambda_d": cfg.NON_NEGATIVE}

    def __init__(self, dip_type: str = "i", lambda_od: float = 10.0, lambda_d: float = 100.0, **kwargs):
        super().__init__(**kwargs)
        self.dip_type = dip_type
        self.lambda_od = float(lambda_od)
        self.lambda_d = float(lambda_d)

    def compute_terms(self, x, training=False, seed=None, condition=None):
        terms = super().compute_terms(x, training=training, seed=seed, condition=condition)
        # The moments of q(z|x) (for the Gaussian: its mean and standard deviation).
        q = self.posterior_layer.distribution(*(terms[f"posterior_{n}"] for n in self.posterior_layer.parameter_names))
        terms["posterior_mean"], terms["posterior_stddev"] = q.mean(), q.stddev()
        covariance = dip_covariance(distribute.gather_batch(terms["posterior_mean"]),
                                    distribute.gather_batch(terms["posterior_stddev"]), self.dip_type)
        terms["dip_regularizer"] = dip_regularizer(covariance, self.lambda_od, self.lambda_d)
        return terms

    def objective(self, terms):
        return super().objective(terms) + terms["dip_regularizer"]


register_model(DIPVAE, name="dip_vae")
