"""MMD-regularised autoencoders: WAE-MMD (Tolstikhin et al. 2018) and InfoVAE (Zhao et al. 2019).

Both pull the *aggregate* posterior q(z) = E_p(x)[q(z|x)] towards the prior p(z) with the maximum
mean discrepancy of a kernel k, estimated on a batch of codes z_1..M ~ q(z) and prior draws
z~_1..M ~ p(z) by the unbiased U-statistic

.. math::

    \\widehat{\\mathrm{MMD}}^2_k = \\frac{1}{M(M-1)} \\sum_{i \\ne j} k(z_i, z_j)
        + \\frac{1}{M(M-1)} \\sum_{i \\ne j} k(\\tilde z_i, \\tilde z_j)
        - \\frac{2}{M^2} \\sum_{i, j} k(z_i, \\tilde z_j),

with the kernels of the papers (d the latent size, sigma_z^2 = 1 the prior's variance):

* ``"imq"``, inverse multiquadratic (WAE): k(x, y) = sum_s C_s / (C_s + ||x - y||^2), C_s = 2 d sigma_z^2 s
  over the scales s in (0.1, 0.2, 0.5, 1, 2, 5, 10) of the WAE reference code;
* ``"rbf"`` (InfoVAE): k(x, y) = exp(-||x - y||^2 / (2 d sigma_z^2)).

* :class:`WAEMMD` minimises reconstruction cost + lambda MMD^2 (the WAE objective with c(x, y) = -log p(x|z),
  the likelihood's cross-entropy; the KL is not part of it, so it has no likelihood bound);
* :class:`InfoVAE` minimises -E_q[log p(x|z)] + (1 - alpha) KL(q(z|x) || p(z)) + (alpha + lambda - 1) MMD^2
  (Zhao et al., eq. 6 with the MMD as the divergence); it reports the ELBO, which it does not maximise
  unless alpha = 0 and lambda = 1.

Example:

>>> import vaezoo
>>> model = vaezoo.get("wae_mmd", latent_dim=8, mmd_weight=10.0)
>>> model.compile()   # metrics: loss, reconstruction, mmd

References:
    Tolstikhin, Bousquet, Gelly & Schoelkopf, "Wasserstein Auto-Encoders", ICLR 2018.
    Zhao, Song & Ermon, "InfoVAE: Balancing Learning and Inference in Variational Autoencoders", AAAI 2019.
    Gretton et al., "A Kernel Two-Sample Test", JMLR 2012 (the unbiased estimator).
"""

from __future__ import annotations

import keras
import tensorflow as tf

from vaezoo import config as cfg
from vaezoo import distribute
from vaezoo.models.vae import VAE
from vaezoo.registry import register_model

KERNELS = ("imq", "rbf")
IMQ_SCALES = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)


def kernel_matrix(x, y, kernel: str = "imq", prior_variance: float = 1.0) -> tf.Tensor:
    """k(x_i, y_j), ``[N, M]``, for codes ``x`` ``[N, d]`` and ``y`` ``[M, d]`` (see the module docstring)."""
    if kernel not in KERNELS:
        raise ValueError(f"Unknown kernel {kernel!r}; valid choices: {', '.join(KERNELS)}.")
    x, y = tf.convert_to_tensor(x, tf.float32), tf.convert_to_tensor(y, tf.float32)
    d = tf.cast(tf.shape(x)[-1], tf.float32)
    sq = tf.maximum(tf.reduce_sum(x**2, -1)[:, None] + tf.reduce_sum(y**2, -1)[None, :] - 2.0 * x @ tf.transpose(y), 0.0)
    if kernel == "rbf":
        return tf.exp(-sq / (2.0 * d * prior_variance))
    return tf.add_n([c / (c + sq) for c in (2.0 * d * prior_variance * s for s in IMQ_SCALES)])


def mmd_u(x, y, kernel: str = "imq", prior_variance: float = 1.0) -> tf.Tensor:
    """The unbiased U-statistic estimate of MMD^2 between samples ``x`` ``[N, d]`` and ``y`` ``[M, d]``
    (N, M >= 2; it can be negative when the two laws are close)."""
    kxx, kyy = kernel_matrix(x, x, kernel, prior_variance), kernel_matrix(y, y, kernel, prior_variance)
    kxy = kernel_matrix(x, y, kernel, prior_variance)
    n, m = tf.cast(tf.shape(x)[0], tf.float32), tf.cast(tf.shape(y)[0], tf.float32)
    off = lambda k, size: (tf.reduce_sum(k) - tf.linalg.trace(k)) / (size * (size - 1.0))  # noqa: E731
    return off(kxx, n) + off(kyy, m) - 2.0 * tf.reduce_mean(kxy)


class _MMDMixin:
    """Adds ``mmd``: the MMD^2 between the batch's codes (one z per example) and as many prior draws."""

    def compute_terms(self, x, training=False, seed=None, condition=None):
        seed = self.next_seed(seed)
        return self.mmd_terms(super().compute_terms(x, training=training, seed=seed, condition=condition), seed)

    def mmd_terms(self, terms, seed):
        z = distribute.gather_batch(terms["z"][0])  # the global batch's codes, [M, d]
        prior_seed = tf.random.experimental.stateless_fold_in(seed, 2)
        noise = self.prior_layer.draw_noise(tf.shape(z)[0], prior_seed)
        prior_z = self.prior_layer.from_noise(**noise)
        mmd = mmd_u(z, prior_z, self.kernel)
        terms["mmd"] = tf.broadcast_to(mmd, tf.shape(terms["reconstruction"]))  # a batch statistic
        return terms


@keras.saving.register_keras_serializable(package="vaezoo")
class WAEMMD(_MMDMixin, VAE):
    """Wasserstein autoencoder with the MMD penalty: reconstruction cost + mmd_weight * MMD^2(q(z), p(z)).

    The encoder is the VAE's Gaussian posterior (a random encoder, which WAE allows); codes are its
    reparameterised samples. ``reconstruction`` (-log p(x|z), nats) and ``mmd`` are the metrics; there
    is no bound on log p(x).

    Args:
        mmd_weight: lambda (WAE on MNIST: 10).
        kernel: ``"imq"`` (default, the paper's) or ``"rbf"``.
        **kwargs: as :class:`vaezoo.VAE`.
    """

    metric_names = ("reconstruction", "mmd")
    config_constraints = {"mmd_weight": cfg.NON_NEGATIVE, "kernel": cfg.OneOf(KERNELS),
                          "gradient_estimator": cfg.OneOf(("reparameterization",))}

    def __init__(self, mmd_weight: float = 10.0, kernel: str = "imq", **kwargs):
        self.mmd_weight = float(mmd_weight)
        self.kernel = kernel
        super().__init__(**kwargs)

    def objective(self, terms):
        return tf.reduce_mean(terms["reconstruction"]) + self.kl_weight * self.mmd_weight * tf.reduce_mean(terms["mmd"])


@keras.saving.register_keras_serializable(package="vaezoo")
class InfoVAE(_MMDMixin, VAE):
    """InfoVAE (MMD-VAE): -E_q[log p(x|z)] + (1 - alpha) KL + (alpha + lambda - 1) MMD^2 (Zhao et al. 2019).

    Args:
        alpha: the weight of the mutual-information term (alpha = 0 keeps the full KL).
        mmd_weight: lambda, the divergence weight (alpha + lambda - 1 multiplies the MMD; must be >= 0).
        kernel: ``"rbf"`` (default, the paper's) or ``"imq"``.
        **kwargs: as :class:`vaezoo.VAE`.
    """

    metric_names = ("elbo", "reconstruction", "kl", "mmd")
    config_constraints = {"alpha": cfg.Range(high=1.0), "mmd_weight": cfg.NON_NEGATIVE, "kernel": cfg.OneOf(KERNELS),
                          "gradient_estimator": cfg.OneOf(("reparameterization",))}

    def __init__(self, alpha: float = 0.0, mmd_weight: float = 1000.0, kernel: str = "rbf", **kwargs):
        if alpha + mmd_weight - 1.0 < 0:
            raise cfg.ConfigError(f"InfoVAE needs alpha + mmd_weight >= 1 (the MMD's weight alpha + lambda - 1 is "
                                  f"not negative); got alpha={alpha}, mmd_weight={mmd_weight}.")
        self.alpha = float(alpha)
        self.mmd_weight = float(mmd_weight)
        self.kernel = kernel
        super().__init__(**kwargs)

    def objective(self, terms):
        divergence = (1.0 - self.alpha) * tf.reduce_mean(terms["kl"]) + \
            (self.alpha + self.mmd_weight - 1.0) * tf.reduce_mean(terms["mmd"])
        return tf.reduce_mean(terms["reconstruction"]) + self.kl_weight * divergence


register_model(WAEMMD, name="wae_mmd")
register_model(InfoVAE, name="info_vae")
