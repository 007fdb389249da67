"""beta-TCVAE: the ELBO's KL split into mutual information, total correlation and dimension-wise KL.

Chen et al. (2018) decompose the averaged KL of the ELBO, with the aggregate posterior
:math:`q(z) = \\mathbb{E}_{p(x)}[q(z|x)]` and a factorised prior:

.. math::

    \\mathbb{E}_{p(x)}[\\mathrm{KL}(q(z|x) \\| p(z))]
    = \\underbrace{I_q(x; z)}_{\\text{index-code MI}}
    + \\underbrace{\\mathrm{KL}\\big(q(z) \\,\\|\\, \\textstyle\\prod_j q(z_j)\\big)}_{\\text{total correlation}}
    + \\underbrace{\\textstyle\\sum_j \\mathrm{KL}(q(z_j) \\| p(z_j))}_{\\text{dimension-wise KL}},

and minimise :math:`-\\mathbb{E}_q[\\log p(x|z)] + \\alpha\\,\\mathrm{MI} + \\beta\\,\\mathrm{TC} + \\gamma\\,\\mathrm{DWKL}`.
With one sample :math:`z_i \\sim q(z|x_i)` per example, the three terms are
:math:`\\log q(z_i|x_i) - \\log q(z_i)`, :math:`\\log q(z_i) - \\sum_j \\log q(z_{ij})` and
:math:`\\sum_j \\log q(z_{ij}) - \\log p(z_i)` (they sum to the Monte-Carlo KL). The aggregate densities
come from the minibatch of M codes out of a data set of N examples:

* minibatch-stratified sampling (``"mss"``, the default): :math:`\\log q(z_i) \\approx \\log \\sum_m w_{im}
  q(z_i|x_m)` with the importance weights of Chen et al. (appendix C.2): 1/N for the example's own
  posterior, about 1/(M-1) for each other one; consistent as M grows, so the three terms can be read
  in nats;
* minibatch-weighted sampling (``"mws"``, the paper's first estimator and the reference code's
  default): every weight 1/(NM). Its gradients are the same up to the weighting, but the terms it
  reports are shifted by constants (log q(z) by about -log N), so read them only relative to each other.

Example:

>>> import keras, vaezoo
>>> model = vaezoo.get("beta_tcvae", beta=6.0)       # 64x64 sprites, 10 latents
>>> model.compile(keras.optimizers.Adam(1e-4))
>>> # model.fit(data.load("sprites_grid"))  # metrics: ..., mutual_information, total_correlation, dimensionwise_kl

Reference:
    Chen, Li, Grosse & Duvenaud, "Isolating Sources of Disentanglement in Variational
    Autoencoders", NeurIPS 2018.
"""

from __future__ import annotations

import keras
import tensorflow as tf
import tensorflow_probability as tfp

from vaezoo import config as cfg
from vaezoo import distribute
from vaezoo import layers as dl
from vaezoo.models.vae import VAE
from vaezoo.registry import register_model

tfd = tfp.distributions

ESTIMATORS = ("mss", "mws")


def log_importance_weights(batch_size, dataset_size: int, estimator: str = "mss") -> tf.Tensor:
    """``[M, M]`` log-weights w_im of q(z_i|x_m) in the estimate log q(z_i) ~ logsumexp_m(log w_im + log q(z_i|x_m)).

    ``"mws"``: every weight 1/(NM). ``"mss"``: 1/N for m = i, (N - M + 1)/(N (M - 1)) for one other
    example of the batch (the next, cyclically) and 1/(M - 1) for the rest (Chen et al. 2018, C.2).
    """
    m = tf.cast(batch_size, tf.float32)
    n = float(dataset_size)
    if estimator == "mws":
        return tf.fill(tf.stack([batch_size, batch_size]), -tf.math.log(n * m))
    if estimator != "mss":
        raise ValueError(f"Unknown estimator {estimator!r}; valid choices: {', '.join(ESTIMATORS)}.")
    others = m - 1.0
    eye = tf.eye(batch_size)
    following = tf.roll(eye, shift=1, axis=1)  # (i, i + 1 mod M)
    rest = 1.0 - eye - following
    weights = eye / n + following * (n - others) / (n * others) + rest / others
    return tf.math.log(weights)


def aggregate_log_densities(z, means, stddevs, log_weights, dimensionwise_log_prob=None):
    """``(log q(z_i), sum_j log q(z_ij))`` per example, ``[B]`` each, from the batch's posteriors.

    ``z`` ``[B, d]``: one code per example; ``means``, ``stddevs`` ``[M, d]``: the diagonal Gaussian
    posteriors q(z|x_m) of the batch; ``log_weights`` ``[B, M]`` (rows of :func:`log_importance_weights`).
    Any factorised posterior: ``dimensionwise_log_prob(z)`` gives log q(z_ij | x_m) ``[B, M, d]`` for
    ``z`` ``[B, 1, d]`` (then ``means`` and ``stddevs`` are not read).
    """
    if dimensionwise_log_prob is None:
        log_q = tfd.Normal(means[None], stddevs[None]).log_prob(z[:, None, :])  # [B, M, d]: log q(z_ij | x_m)
    else:
        log_q = dimensionwise_log_prob(z[:, None, :])
    log_qz = tf.reduce_logsumexp(log_weights + tf.reduce_sum(log_q, axis=-1), axis=1)
    log_qz_product = tf.reduce_sum(tf.reduce_logsumexp(log_weights[:, :, None] + log_q, axis=1), axis=-1)
    return log_qz, log_qz_product


@keras.saving.register_keras_serializable(package="vaezoo")
class BetaTCVAE(VAE):
    """beta-TCVAE: reconstruction + alpha MI + beta TC + gamma dimension-wise KL (Chen et al. 2018).

    The three terms are metrics (nats, per example); ``elbo`` is the ELBO with the closed-form KL.
    alpha = beta = gamma = 1 is the VAE's objective with a Monte-Carlo KL. Under a ``tf.distribute``
    strategy the aggregate densities use the posteriors of the whole global batch. The KL warm-up
    weight multiplies all three terms.

    Args:
        alpha: weight of the index-code mutual information.
        beta: weight of the total correlation (disentanglement_lib sweeps 1..10).
        gamma: weight of the dimension-wise KL.
        dataset_size: N, the number of training examples (enters the estimators' weights).
        estimator: ``"mss"`` (minibatch-stratified sampling) or ``"mws"`` (minibatch-weighted).
        **kwargs: as :class:`vaezoo.VAE`.
    """

    metric_names = ("elbo", "reconstruction", "kl", "mutual_information", "total_correlation", "dimensionwise_kl")
    config_constraints = {"alpha": cfg.NON_NEGATIVE, "beta": cfg.NON_NEGATIVE, "gamma": cfg.NON_NEGATIVE,
                          "dataset_size": cfg.Range(2), "estimator": cfg.OneOf(ESTIMATORS)}

    def __init__(self, alpha: float = 1.0, beta: float = 6.0, gamma: float = 1.0, dataset_size: int = 727_280,
                 estimator: str = "mss", **kwargs):
        super().__init__(**kwargs)
        self.alpha, self.beta, self.gamma = float(alpha), float(beta), float(gamma)
        self.dataset_size = int(dataset_size)
        self.estimator = estimator
        if not self.posterior_layer.factorised:
            factorised = [n for n, k in dl.POSTERIORS.items() if k.factorised]
            raise cfg.ConfigError(f"beta-TCVAE needs a posterior that factorises over the dimensions of z (for the "
                                  f"dimension-wise KL); {self.posterior!r} does not. Factorised posteriors: "
                                  f"{', '.join(factorised)}.")

    def compute_terms(self, x, training=False, seed=None, condition=None):
        terms = super().compute_terms(x, training=training, seed=seed, condition=condition)
        z = terms["z"][0]  # [B, d]: one code per example
        # The global batch's posteriors q(z|x_m), [1, M, ...] each, broadcast against z [B, 1, d].
        params = tuple(distribute.gather_batch(terms[f"posterior_{n}"])[None]
                       for n in self.posterior_layer.parameter_names)
        log_weights = distribute.replica_rows(
            lambda m: log_importance_weights(m, self.dataset_size, self.estimator), tf.shape(z)[0])
        log_qz, log_qz_product = aggregate_log_densities(
            z, None, None, log_weights, lambda codes: self.posterior_layer.dimensionwise_log_prob(params, codes))
        log_qz_x, log_pz = terms["log_qz"][0], terms["log_pz"][0]
        terms["mutual_information"] = log_qz_x - log_qz
        terms["total_correlation"] = log_qz - log_qz_product
        terms["dimensionwise_kl"] = log_qz_product - log_pz
        return terms

    def objective(self, terms):
        penalty = (self.alpha * terms["mutual_information"] + self.beta * terms["total_correlation"]
                   + self.gamma * terms["dimensionwise_kl"])
        return tf.reduce_mean(terms["reconstruction"]) + self.kl_weight * tf.reduce_mean(penalty)


register_model(BetaTCVAE, name="beta_tcvae")
