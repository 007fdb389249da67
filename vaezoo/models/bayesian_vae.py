"""Full variational Bayes over the decoder: a VAE whose generative weights theta are random.

Kingma & Welling (2014, appendix F) put a variational posterior q_phi(theta) over the decoder's
parameters and a hyperprior p_alpha(theta), and bound the marginal likelihood of the whole data set:

.. math::

    \\log p_\\alpha(X) = \\mathrm{KL}(q_\\phi(\\theta) \\| p_\\alpha(\\theta|X)) + \\mathcal{L}(\\phi; X), \\qquad
    \\mathcal{L}(\\phi; X) = \\mathbb{E}_{q_\\phi(\\theta)}\\big[\\log p_\\theta(X) + \\log p_\\alpha(\\theta)
                              - \\log q_\\phi(\\theta)\\big]                       \\quad (1, 2)

with log p_theta(X) = sum_i log p_theta(x_i) >= sum_i L(theta, phi; x_i), the per-example ELBO (eq. 3-4).
With z = g_phi(eps, x) (eq. 5-6) and theta = h_phi(zeta) (eq. 7-8), the estimator is

.. math::

    f_\\phi(x, z, \\theta) = N \\big(\\log p_\\theta(x|z) + \\log p(z) - \\log q_\\phi(z|x)\\big)
                            + \\log p_\\alpha(\\theta) - \\log q_\\phi(\\theta)          \\quad (9)

averaged over a minibatch (eq. 10): per batch of M examples, N times the batch's mean ELBO under one
weight draw, plus the weight term once. vaezoo divides the whole bound by N, so the loss and the
metrics are per example and comparable with the VAE's:

* ``elbo``: the per-example ELBO at the drawn theta (``reconstruction`` and ``kl`` its parts);
* ``weight_kl``: KL(q_phi(theta) || p_alpha(theta)) / N, closed form (``weight_kl="analytic"``, the
  default) or log q_phi(theta~) - log p_alpha(theta~) at the draw (``"monte_carlo"``: eq. 9 exactly);
* ``bound``: elbo - weight_kl, an unbiased estimate of L(phi; X) / N (eq. 2), which ``fit`` maximises.

q_phi(theta) is a factorised Gaussian (:mod:`vaezoo.bayesian`), sampled by reparameterisation
(one draw per batch, eq. 7) or by Flipout (``weight_estimator="flipout"``: a pseudo-independent
draw per example, lower variance). p_alpha is N(0, alpha^2) per layer, alpha learned by maximising
the same bound (empirical Bayes; ``learn_weight_prior_scale``) or fixed (``weight_prior_scale``).

Evaluation. :meth:`BayesianVAE.log_weights` pairs every z sample with a weight draw
theta_s ~ q_phi(theta) (``eval_weight_draws`` draws per call, the z samples split evenly over them),
so :func:`vaezoo.evaluate.log_likelihood` estimates the predictive likelihood with theta integrated
out under q,

.. math:: \\log p(x) \\approx \\log \\frac{1}{S K} \\sum_{s=1}^S \\sum_{k=1}^K
          \\frac{p_{\\theta_s}(x|z_{sk})\\, p(z_{sk})}{q_\\phi(z_{sk}|x)},

combined in log space. Inside the log the estimate is unbiased for E_q(theta)[p_theta(x)]; the log makes
it biased low (Jensen), the bias vanishing as S K grows, like the IWAE estimate of a VAE's likelihood.
``weights="mean"`` instead uses the posterior-mean decoder (a point estimate, for comparison).

Example:

>>> import keras, vaezoo
>>> model = vaezoo.get("bayesian_vae", dataset_size=60000)
>>> model.compile(keras.optimizers.Adam(1e-3))
>>> # model.fit(train)      # metrics: loss, bound, elbo, reconstruction, kl, weight_kl
>>> images = model.sample(16, seed=0)                     # a weight draw per image
>>> means = model.sample(16, seed=0, weights="mean")      # the posterior-mean decoder

Reference:
    Kingma & Welling, "Auto-Encoding Variational Bayes", ICLR 2014, appendix F (seed 004).
    Wen et al., "Flipout", ICLR 2018.
"""

from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf

from vaezoo import bayesian
from vaezoo import config as cfg
from vaezoo.models.vae import VAE
from vaezoo.registry import register_model

WEIGHT_ESTIMATORS = ("reparameterization", "flipout")
WEIGHT_KL = ("analytic", "monte_carlo")
WEIGHTS = ("sample", "mean")


@keras.saving.register_keras_serializable(package="vaezoo")
class BayesianVAE(VAE):
    """A VAE with a factorised Gaussian posterior over its decoder's weights (full VB, AEVB appendix F).

    Args:
        dataset_size: N, the number of training examples (the bound of the data set is N times the
            per-example bound plus the weight term once). Required: set it in the config
            (``dataset_size: 60000``), with ``vaezoo.get("bayesian_vae", dataset_size=N)``, or let
            ``vaezoo train`` set it from the training data.
        weight_prior_scale: alpha of p_alpha(theta) = N(0, alpha^2) (its start if learned).
        learn_weight_prior_scale: learn alpha per layer by maximising the bound (empirical Bayes).
        weight_posterior_init_scale: the initial sigma of q_phi(theta).
        weight_estimator: ``"reparameterization"`` (one draw per batch) or ``"flipout"``.
        weight_kl: ``"analytic"`` (closed form) or ``"monte_carlo"`` (at the draw; reparameterization only).
        eval_weight_draws: weight draws per :meth:`log_weights` call (the z samples are split over them).
        **kwargs: as :class:`vaezoo.VAE`; with ``architecture="conv"`` the decoder is
            :class:`vaezoo.bayesian.BayesianConvDecoder` (transposed convolutions with random kernels).
    """

    metric_names = ("bound", "elbo", "reconstruction", "kl", "weight_kl")
    #: Signatures that TFLite builtins cannot run (vaezoo.export.tflite refuses them, saying why).
    saved_model_only_signatures = {"sample_weights": "stateless random ops, seeded by an input, are not builtins"}
    #: ``vaezoo train`` sets ``dataset_size`` to the number of training examples unless it is given.
    dataset_size_from_data = True
    #: Trains faster without XLA on a CPU: 500 steps of the 784-200-200-50 network, batch 100, took 9.0 s
    #: with XLA and 5.3 s without (benchmarks/full_vb.py --speed and the same loop with jit_compile=False).
    xla_by_default = False
    config_constraints = {
        "dataset_size": cfg.AT_LEAST_1,
        "weight_prior_scale": cfg.POSITIVE,
        "weight_posterior_init_scale": cfg.POSITIVE,
        "weight_estimator": cfg.OneOf(WEIGHT_ESTIMATORS),
        "weight_kl": cfg.OneOf(WEIGHT_KL),
        "eval_weight_draws": cfg.AT_LEAST_1,
        "architecture": cfg.OneOf(("mlp", "conv")),
    }
    def __init__(self, dataset_size: int | None = None, weight_prior_scale: float = 1.0,
                 learn_weight_prior_scale: bool = True, weight_posterior_init_scale: float = 1e-3,
                 weight_estimator: str = "reparameterization", weight_kl: str = "analytic",
                 eval_weight_draws: int = 10, **kwargs):
        if dataset_size is None:
            raise cfg.ConfigError(
                "bayesian_vae needs dataset_size, N, the number of training examples (the data set's bound is N "
                "per-example bounds plus the weight term once): pass dataset_size=N (60000 for MNIST's training "
                "set), set 'dataset_size: N' in its YAML or --set dataset_size=N; `vaezoo train` sets it from the data.")
        if weight_kl == "monte_carlo" and weight_estimator != "reparameterization":
            raise cfg.ConfigError(f"weight_kl 'monte_carlo' evaluates log q(theta) at one weight draw, which needs "
                                  f"weight_estimator 'reparameterization', got {weight_estimator!r}.")
        self.dataset_size = int(dataset_size)
        self.weight_prior_scale = float(weight_prior_scale)
        self.learn_weight_prior_scale = bool(learn_weight_prior_scale)
        self.weight_posterior_init_scale = float(weight_posterior_init_scale)
        self.weight_estimator = weight_estimator
        self.weight_kl = weight_kl
        self.eval_weight_draws = int(eval_weight_draws)
        super().__init__(**kwargs)

    def make_decoder(self):
        options = dict(activation=self.activation, prior_scale=self.weight_prior_scale,
                       learn_prior_scale=self.learn_weight_prior_scale,
                       posterior_init_scale=self.weight_posterior_init_scale, name="decoder")
        if self.architecture == "conv":
            return bayesian.BayesianConvDecoder(self.data_shape, self.hidden_units, self.conv_filters, **options)
        return bayesian.BayesianMLP((*reversed(self.hidden_units), math.prod(self.data_shape)), **options)

    def build(self, input_shape=None):
        self.decoder.build((None, self.latent_dim))
        self.posterior_layer.build(self.encoder.output_shape)
        self.prior_layer.build()
        self.likelihood_layer.build((None, *self.data_shape))
        self.built = True

    # ---- the decoder under a weight draw ---------------------------------------------------------

    def decoder_parameters(self, z, training=False, seed=None, weights: str = "sample", num_draws: int = 1,
                           condition=None):
        """Raw likelihood parameters for z ``[K, B, latent_dim]`` (or ``[B, latent_dim]``).

        ``weights="sample"``: ``num_draws`` draws theta_s ~ q_phi(theta) from ``seed``, the K leading
        samples split evenly over them (one draw for all with ``num_draws=1``; Flipout draws per row
        when training with ``weight_estimator="flipout"``); ``"mean"``: the posterior-mean weights.
        """
        self._check_weights(weights)
        z = tf.convert_to_tensor(z, tf.float32)
        lead = tf.shape(z)[:-1]
        if weights == "mean" or seed is None:
            out = self.decoder.apply(tf.reshape(z, [1, -1, self.latent_dim]), mode="mean")
        else:
            mode = "flipout" if (training and self.weight_estimator == "flipout") else "sample"
            out = self.decoder.apply(tf.reshape(z, [num_draws, -1, self.latent_dim]), mode=mode, seed=seed)
        return tf.reshape(out, tf.concat([lead, self.data_shape], axis=0))

    @staticmethod
    def _check_weights(weights):
        if weights not in WEIGHTS:
            raise ValueError(f"Unknown weights {weights!r}; valid choices: {', '.join(WEIGHTS)}.")

    def weight_divergence(self, seed=None) -> tf.Tensor:
        """The weight term of the data set's bound, KL(q_phi(theta) || p_alpha(theta)) in nats (not / N):
        closed form, or log q - log p at the draw of ``seed`` for ``weight_kl="monte_carlo"``."""
        if self.weight_kl == "analytic" or seed is None:
            return self.decoder.kl_divergence()
        # the same draws as decoder_parameters(..., seed) makes in mode "sample" with one draw
        _, log_ratio = self.decoder.apply(tf.zeros([1, 1, self.latent_dim]), mode="sample", seed=seed,
                                          return_log_ratio=True)
        return -log_ratio[0]

    # ---- the bound --------------------------------------------------------------------------------

    def compute_terms(self, x, training=False, seed=None, condition=None):
        seed = self.next_seed(seed)
        terms = super().compute_terms(x, training=training, seed=seed, condition=condition)
        decoder_seed = tf.random.experimental.stateless_fold_in(seed, 1)  # the draw VAE._draw decoded with
        weight_kl = self.weight_divergence(decoder_seed) / float(self.dataset_size)
        terms["weight_kl"] = tf.broadcast_to(weight_kl, tf.shape(terms["elbo"]))
        terms["bound"] = terms["elbo"] - terms["weight_kl"]
        return terms

    def objective(self, terms):
        return super().objective(terms) + tf.reduce_mean(terms["weight_kl"])

    def log_weights(self, x, num_samples: int, seed=None, weights: str = "sample"):
        """log p_theta_s(x|z_k) + log p(z_k) - log q(z_k|x), ``[K, B]``, each z_k decoded under a weight
        draw theta_s ~ q_phi(theta): gcd(K, eval_weight_draws) draws, the K samples split evenly over
        them (``weights="mean"``: the posterior-mean decoder). See the module docstring for the estimator."""
        self._check_weights(weights)
        x = self.check_inputs(x)
        seed = self.next_seed(seed)
        params = self.posterior_parameters(x)
        z, log_qz = self.posterior_sample(params, num_samples, tf.shape(x)[0], seed)
        draws = math.gcd(int(num_samples), self.eval_weight_draws)
        decoder_seed = tf.random.experimental.stateless_fold_in(seed, 1)
        log_px = self.likelihood_layer(self.decoder_parameters(z, seed=decoder_seed, weights=weights,
                                                               num_draws=draws)).log_prob(x)
        return log_px + self.prior_log_prob(z) - log_qz

    # ---- public API --------------------------------------------------------------------------------

    def decode(self, z, weights: str = "mean", seed=None):
        """E[x|z] under the posterior-mean weights (default) or one weight draw (``weights="sample"``)."""
        seed = None if weights == "mean" else self.next_seed(seed)
        return self.likelihood_layer(self.decoder_parameters(z, seed=seed, weights=weights)).mean()

    def sample(self, n: int, seed=None, mean: bool = True, weights: str = "sample", sampler: str = "prior"):
        """``n`` samples: z ~ p(z) (or the ex-post ``sampler``, see :meth:`vaezoo.VAE.sample`), a weight draw
        theta ~ q_phi(theta) per sample (``weights="mean"``: the posterior-mean decoder), then E[x|z, theta]
        (``mean=True``) or x ~ p(x|z, theta)."""
        self._check_weights(weights)
        return self._sample(self.check_count(n), self.next_seed(seed), mean, weights, sampler)

    def _sample(self, n, seed, mean=True, weights="sample", sampler="prior"):
        source = self.sampler_layer(sampler)
        z = source.from_noise(**source.draw_noise(n, seed))
        if weights == "mean":
            params = self.decoder_parameters(z, weights="mean")
        else:  # one draw per sample: n draws of one row each
            params = self.decoder_parameters(z[:, None, :], seed=tf.random.experimental.stateless_fold_in(seed, 1),
                                             num_draws=n)[:, 0]
        px = self.likelihood_layer(params)
        return px.mean() if mean else px.sample(seed=tf.reverse(seed, [0]))

    def reconstruction_uncertainty(self, x, num_draws: int = 16, seed=None):
        """Mean and per-pixel standard deviation of E[x|z, theta_s] over ``num_draws`` weight draws, z the
        posterior mean of x: the decoder's uncertainty about each pixel, ``([B, *data_shape],) * 2``."""
        num_draws = self.check_count(num_draws, "num_draws")
        seed = self.next_seed(seed)
        z = self.code(x)  # [B, d]
        tiled = tf.tile(z[None], [num_draws, 1, 1])
        means = self.likelihood_layer(self.decoder_parameters(tiled, seed=seed, num_draws=num_draws)).mean()
        return tf.reduce_mean(means, axis=0), tf.math.reduce_std(means, axis=0)

    def endpoints(self):
        """As :meth:`vaezoo.VAE.endpoints`, under the posterior-mean decoder weights (so the TFLite model,
        whose default signatures are encode, decode and sample_from_noise, decodes with them), plus
        ``sample_weights`` (n and an int32[2] seed: z ~ p(z) and a weight draw per image, reproducible
        from the seed; in the SavedModel only: its stateless random ops are not TFLite builtins)."""
        out = super().endpoints()

        def sample_weights(n, seed):
            return {"images": self._sample(n, seed)}

        out["sample_weights"] = (sample_weights, {"n": tf.TensorSpec([], tf.int32), "seed": tf.TensorSpec([2], tf.int32)})
        return out


register_model(BayesianVAE, name="bayesian_vae")
