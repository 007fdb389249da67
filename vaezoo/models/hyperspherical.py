"""Hyperspherical latents: the S-VAE (Davidson et al. 2018), von Mises-Fisher posterior, uniform prior.

z lives on the unit sphere S^(m-1) in R^m (m = ``latent_dim`` >= 2). The posterior is

.. math:: q(z|x) = \\mathrm{vMF}(z; \\mu(x), \\kappa(x)) = C_m(\\kappa) \\exp(\\kappa \\mu^\\top z), \\qquad
          C_m(\\kappa) = \\frac{\\kappa^{m/2-1}}{(2\\pi)^{m/2} I_{m/2-1}(\\kappa)},

with mu(x) a unit vector and kappa(x) = softplus(.) + 1 > 0; the prior is uniform on the sphere,
p(z) = Gamma(m/2) / (2 pi^(m/2)). The KL is closed form (Davidson et al., eq. 8-9):

.. math:: \\mathrm{KL}(q \\| p) = \\kappa \\frac{I_{m/2}(\\kappa)}{I_{m/2-1}(\\kappa)} + \\log C_m(\\kappa)
          + \\log \\frac{2 \\pi^{m/2}}{\\Gamma(m/2)}

(TFP's ``kl_divergence(VonMisesFisher, SphericalUniform)``, checked against this formula in
``tests/test_hyperspherical.py``).

Sampling (Wood 1994, as in Davidson et al., algorithm 1): the component w = mu^T z has density
proportional to exp(kappa w) (1 - w^2)^((m-3)/2); it is drawn by rejection from proposals
w = h(eps, kappa) = (1 - (1 + b) eps) / (1 - (1 - b) eps), eps ~ Beta((m-1)/2, (m-1)/2), then
z' = (w, sqrt(1 - w^2) v) with v uniform on S^(m-2), and z = the Householder reflection of z' that takes
e_1 to mu. Here the sampler is bounded (XLA- and export-friendly, no while loop): ``rejection_proposals``
proposals per sample, the first accepted is kept (the last one if none is; Wood's acceptance rate stays
above about 0.5 at every kappa and m, so with 20 proposals that happens with probability below 1e-6:
``VonMisesFisherPosterior.acceptance_rate`` measures it).

The gradient in kappa (Davidson et al., eq. 6; Naesseth et al. 2017): the accepted eps has density
pi(eps | kappa) = s(eps) q(h(eps, kappa)) / r(h(eps, kappa)), so

.. math:: \\nabla_\\kappa \\mathbb{E}_q[f(z)] = \\mathbb{E}_\\pi[\\nabla_\\kappa f(h(\\epsilon, \\kappa))]
          + \\mathbb{E}_\\pi\\big[f(h(\\epsilon, \\kappa)) \\nabla_\\kappa \\log
          \\frac{q(h(\\epsilon, \\kappa) | \\kappa)}{r(h(\\epsilon, \\kappa) | \\kappa)}\\big],

the first term through the sample (g_rep), the second a score term (g_cor) that
:meth:`VonMisesFisherPosterior.score_correction` gives and :meth:`vaezoo.VAE.gradient_surrogate` adds;
log r(h(eps)) = log s(eps) - log|dh/deps|, dh/deps = -2b / (1 - (1 - b) eps)^2.

Example:

>>> import vaezoo
>>> model = vaezoo.get("hyperspherical_vae", latent_dim=10)    # z on S^9
>>> model.compile()                      # metrics: loss, elbo, reconstruction, kl
>>> mu, kappa = model.encode(x)          # doctest: +SKIP  [B, 10] unit vectors, [B] concentrations

References:
    Davidson, Falorsi, De Cao, Kipf & Tomczak, "Hyperspherical Variational Auto-Encoders", UAI 2018.
    Wood, "Simulation of the von Mises Fisher distribution", Communications in Statistics 1994.
    Naesseth, Ruiz, Linderman & Blei, "Reparameterization Gradients through Acceptance-Rejection Sampling
    Algorithms", AISTATS 2017.
"""

from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from vaezoo import config as cfg
from vaezoo import layers as dl
from vaezoo.models.vae import VAE
from vaezoo.registry import register_model

tfd = tfp.distributions


def _check_sphere(latent_dim, what: str) -> int:
    if int(latent_dim) < 2:
        raise cfg.ConfigError(f"The {what} lives on the sphere S^(latent_dim - 1) in R^latent_dim, which needs "
                              f"latent_dim >= 2; got latent_dim={latent_dim}.")
    return int(latent_dim)


def wood_constants(concentration, m: int):
    """Wood's b and a of the proposal, and d = 4ab/(1+b) - (m-1) log(m-1), for kappa ``[...]``.

    b = (m-1) / (2 kappa + sqrt(4 kappa^2 + (m-1)^2)) is the stable form of (-2 kappa + sqrt(...)) / (m-1).
    """
    m1 = float(m - 1)
    root = tf.sqrt(4.0 * concentration ** 2 + m1 ** 2)
    b = m1 / (2.0 * concentration + root)
    a = (m1 + 2.0 * concentration + root) / 4.0
    d = 4.0 * a * b / (1.0 + b) - m1 * math.log(m1)
    return b, a, d


def log_normalizer(concentration, m: int):
    """log C_m(kappa) = (m/2 - 1) log kappa - (m/2) log 2 pi - log I_{m/2-1}(kappa), differentiable in kappa."""
    v = m / 2.0 - 1.0
    return (v * tf.math.log(concentration) - (m / 2.0) * math.log(2 * math.pi)
            - tfp.math.log_bessel_ive(tf.cast(v, concentration.dtype), concentration) - concentration)


@keras.saving.register_keras_serializable(package="vaezoo")
@dl.register_posterior("von_mises_fisher")
class VonMisesFisherPosterior(dl.Posterior):
    """Features -> q(z|x) = vMF(mu(x), kappa(x)) on S^(latent_dim - 1), sampled by a bounded Wood sampler.

    A dense layer gives ``latent_dim + 1`` numbers: the direction (normalised to mu) and kappa =
    softplus(.) + 1 (as Davidson et al.'s implementation). ``encode`` returns ``(mean_direction,
    concentration)``, ``[B, latent_dim]`` and ``[B]``; ``point`` is mu (the mode). The distribution is TFP's
    ``VonMisesFisher`` (its ``log_prob`` and its KL against ``SphericalUniform``, right at any dimension;
    its own sampler is not used: see the module docstring).

    Args:
        latent_dim: m, the dimension of the space the sphere S^(m-1) sits in (>= 2).
        rejection_proposals: proposals per sample of the bounded rejection sampler.
    """

    parameter_names = ("mean_direction", "concentration")
    support = "sphere"
    config_keys = {"rejection_proposals": ("rejection_proposals", cfg.AT_LEAST_1)}

    def __init__(self, latent_dim: int, rejection_proposals: int = 20, **kwargs):
        super().__init__(_check_sphere(latent_dim, "von_mises_fisher posterior"), **kwargs)
        self.rejection_proposals = int(rejection_proposals)
        self.projection = keras.layers.Dense(self.latent_dim + 1, name="projection", dtype=self.dtype_policy)

    def build(self, input_shape):
        self.projection.build(input_shape)
        self.built = True

    def parameters(self, features):
        h = tf.cast(self.projection(features), tf.float32)
        direction = tf.math.l2_normalize(h[..., : self.latent_dim], axis=-1)
        return direction, tf.nn.softplus(h[..., self.latent_dim]) + 1.0

    def distribution(self, mean_direction, concentration):
        return tfd.VonMisesFisher(mean_direction, concentration)

    def noise_shape(self):
        """Per sample: ``rejection_proposals`` Beta((m-1)/2, (m-1)/2) proposals eps, as many uniforms in (0, 1],
        and m-1 standard normals (the tangent direction v)."""
        return (2 * self.rejection_proposals + self.latent_dim - 1,)

    def draw_noise(self, num_samples, batch_size, seed):
        t = self.rejection_proposals
        shape = tf.stack([num_samples, batch_size, t])
        seeds = [tf.random.experimental.stateless_fold_in(seed, i) for i in range(4)]
        # Beta(k/2, k/2) with k = m - 1 as chi2_k / (chi2_k + chi2'_k), each a sum of k squared normals
        # (Gamma(k/2) = chi2_k / 2): exact, and normals only (no Gamma sampler, which XLA lacks).
        squares = tf.random.stateless_normal(tf.stack([2, num_samples, batch_size, t, self.latent_dim - 1]),
                                             seeds[0]) ** 2
        chi2 = tf.reduce_sum(squares, axis=-1)
        eps = chi2[0] / (chi2[0] + chi2[1])
        u = tf.random.stateless_uniform(shape, seeds[2], minval=1e-12, maxval=1.0)
        v = tf.random.stateless_normal(tf.stack([num_samples, batch_size, self.latent_dim - 1]), seeds[3])
        return tf.concat([eps, u, v], axis=-1)

    def _split(self, noise):
        t = self.rejection_proposals
        return noise[..., :t], noise[..., t:2 * t], noise[..., 2 * t:]

    def _accepts(self, concentration, noise):
        """Wood's test for each proposal: ``[K, B, rejection_proposals]`` booleans, and the proposals eps."""
        eps, u, _ = self._split(noise)
        b, a, d = (c[..., None] for c in wood_constants(concentration[None], self.latent_dim))
        t = 2.0 * a * b / (1.0 - (1.0 - b) * eps)
        return (self.latent_dim - 1.0) * tf.math.log(t) - t + d >= tf.math.log(u), eps

    def accepted(self, concentration, noise):
        """The accepted proposal eps ``[K, B]`` and whether any of the proposals was accepted."""
        accept, eps = self._accepts(concentration, noise)
        first = tf.argmax(tf.cast(accept, tf.int32), axis=-1, output_type=tf.int32)
        found = tf.reduce_any(accept, axis=-1)
        index = tf.where(found, first, self.rejection_proposals - 1)
        chosen = tf.gather(eps, index, batch_dims=2)
        return tf.stop_gradient(chosen), found

    def acceptance_rate(self, concentration, num_samples: int = 1000, seed=(0, 0)):
        """The fraction of proposals Wood's test accepts at each kappa ``[B]`` (the sampler's efficiency)."""
        concentration = tf.convert_to_tensor(concentration, tf.float32)
        noise = self.draw_noise(num_samples, tf.shape(concentration)[0], tf.constant(seed))
        accept, _ = self._accepts(concentration, noise)
        return tf.reduce_mean(tf.cast(accept, tf.float32), axis=[0, 2])

    def _w(self, eps, concentration):
        """w = h(eps, kappa), 1 - w^2 and 1 - w (in forms that keep their precision near w = 1)."""
        b, _, _ = wood_constants(concentration, self.latent_dim)
        denominator = 1.0 - (1.0 - b) * eps
        w = (1.0 - (1.0 + b) * eps) / denominator
        one_minus_w = 2.0 * b * eps / denominator
        one_minus_w2 = 4.0 * b * eps * (1.0 - eps) / denominator ** 2
        return w, one_minus_w, one_minus_w2, b, denominator

    def sample_and_log_prob(self, params, noise):
        mean_direction, concentration = params
        eps, _ = self.accepted(concentration, noise)
        w, _, one_minus_w2, _, _ = self._w(eps, concentration[None])
        v = tf.math.l2_normalize(self._split(noise)[2], axis=-1)
        z0 = tf.concat([w[..., None], tf.sqrt(tf.maximum(one_minus_w2, 0.0))[..., None] * v], axis=-1)
        # Householder reflection taking e_1 to mu: z = z0 - 2 u (u . z0) / (u . u), u = e_1 - mu.
        e1 = tf.one_hot(0, self.latent_dim, dtype=z0.dtype)
        u = (e1 - mean_direction)[None]
        z = z0 - 2.0 * u * tf.math.divide_no_nan(tf.reduce_sum(u * z0, -1, keepdims=True),
                                                 tf.reduce_sum(u * u, -1, keepdims=True))
        return z, self.distribution(mean_direction, concentration).log_prob(z)

    def score_correction(self, params, noise):
        """log q_w(h(eps, kappa) | kappa) + log|dh/deps| at the accepted eps (held constant), ``[K, B]``:
        log pi(eps | kappa) up to log s(eps), whose kappa-gradient is g_cor's (module docstring)."""
        _, concentration = params
        eps, _ = self.accepted(concentration, noise)
        kappa = concentration[None]
        _, one_minus_w, one_minus_w2, b, denominator = self._w(eps, kappa)
        m = self.latent_dim
        # log density of w: log C_m(kappa) + kappa w + (m-3)/2 log(1 - w^2) + log |S^(m-2)|, with
        # kappa w = kappa - kappa (1 - w) so that log C_m + kappa stays finite for large kappa.
        log_area = math.log(2.0) + ((m - 1) / 2.0) * math.log(math.pi) - math.lgamma((m - 1) / 2.0)
        log_qw = (log_normalizer(kappa, m) + kappa - kappa * one_minus_w
                  + (m - 3) / 2.0 * tf.math.log(tf.maximum(one_minus_w2, 1e-30)) + log_area)
        log_dh = tf.math.log(2.0 * b) - 2.0 * tf.math.log(denominator)
        return log_qw + log_dh

    def point(self, params):
        return params[0]

    def get_config(self):
        return {**super().get_config(), "rejection_proposals": self.rejection_proposals}


@keras.saving.register_keras_serializable(package="vaezoo")
@dl.register_prior("spherical_uniform")
class SphericalUniformPrior(dl.Prior):
    """p(z) uniform on S^(latent_dim - 1) (TFP's ``SphericalUniform``); samples normalise standard normal noise."""

    support = "sphere"

    def __init__(self, latent_dim: int, **kwargs):
        super().__init__(_check_sphere(latent_dim, "spherical_uniform prior"), **kwargs)

    def call(self, inputs=None):
        return tfd.SphericalUniform(dimension=self.latent_dim, dtype=tf.float32)

    def from_noise(self, noise):
        return tf.math.l2_normalize(tf.convert_to_tensor(noise, tf.float32), axis=-1)


@keras.saving.register_keras_serializable(package="vaezoo")
class HypersphericalVAE(VAE):
    """The S-VAE: a VAE with a von Mises-Fisher posterior and a uniform prior on the sphere.

    The ELBO and every surface are the VAE's (:class:`vaezoo.VAE`); the bound's gradient in kappa adds the
    rejection sampler's correction term. ``traverse`` follows great circles.

    Args:
        latent_dim: m >= 2 (z on S^(m-1)).
        rejection_proposals: proposals per sample of the bounded Wood sampler (default 20).
        **kwargs: as :class:`vaezoo.VAE`; ``posterior`` ``von_mises_fisher``, ``prior`` ``spherical_uniform``.
    """

    config_constraints = {"latent_dim": cfg.Range(2), "posterior": cfg.OneOf(("von_mises_fisher",)),
                          "prior": cfg.OneOf(("spherical_uniform",))}

    def __init__(self, latent_dim: int = 10, rejection_proposals: int = 20, posterior: str = "von_mises_fisher",
                 prior: str = "spherical_uniform", **kwargs):
        self.rejection_proposals = int(rejection_proposals)
        super().__init__(latent_dim=latent_dim, posterior=posterior, prior=prior, **kwargs)

    def component_options(self):
        return {**super().component_options(), "rejection_proposals": self.rejection_proposals}

    def traverse(self, x, steps: int = 9, limit: float = math.pi / 2):
        """Great circles through x's code mu: row i decodes cos(t) mu + sin(t) v_i for ``steps`` angles t
        from ``-limit`` to ``limit`` (radians), v_i the unit direction of e_i orthogonal to mu:
        ``[latent_dim, steps, *data_shape]``."""
        steps = self.check_count(steps, "steps")
        x = np.asarray(x, dtype="float32").reshape((1, *self.data_shape))
        mu = np.asarray(self.code(x), dtype="float64")[0]
        tangent = np.eye(self.latent_dim) - np.outer(mu, mu)  # row i: e_i - (e_i . mu) mu
        norms = np.linalg.norm(tangent, axis=1, keepdims=True)
        tangent = np.where(norms > 1e-6, tangent / np.maximum(norms, 1e-12), 0.0)
        angles = np.linspace(-limit, limit, steps)
        z = np.cos(angles)[None, :, None] * mu[None, None] + np.sin(angles)[None, :, None] * tangent[:, None, :]
        images = self.decode(z.reshape(-1, self.latent_dim).astype("float32"))
        return np.asarray(images).reshape(self.latent_dim, steps, *self.data_shape)


register_model(HypersphericalVAE, name="hyperspherical_vae")
