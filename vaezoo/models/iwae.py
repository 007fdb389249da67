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

The family's other bounds and estimators, all functions of the same log-weights ``[K, B]``:

* ``gradient_estimator: dreg`` (preset ``iwae_dreg``): the doubly reparameterised gradient of the inference
  network (Tucker et al. 2019, eq. 5), sum_k w~_k^2 d log w_k / dz_k dz_k / dphi with q's parameters held in
  log q, w~ the normalised weights; the decoder keeps the IWAE gradient.
* :class:`MIWAE` (``miwae``): M groups of K samples, (1/M) sum_m L_K^(m) (Rainforth et al. 2018);
* :class:`CIWAE` (``ciwae``): beta ELBO + (1 - beta) L_K of the same K samples;
* :class:`PIWAE` (``piwae``): the decoder trained on L_{MK}, the encoder on MIWAE(M, K);
* :class:`RWS` (``rws``): reweighted wake-sleep (Bornschein & Bengio 2015): the decoder on L_K, the
  encoder by the wake-phi update sum_k w~_k grad log q(z_k|x) (z held), or its doubly reparameterised form
  sum_k (w~_k - w~_k^2) d log w_k / dz_k dz_k / dphi (``gradient_estimator: dreg``, Tucker et al. 2019, eq. 7).

Where the encoder and the decoder follow different objectives (DReG, PIWAE, RWS), the inference network's
variables (the encoder and the posterior layer) are :meth:`auxiliary variables <vaezoo.BaseVAE.auxiliary_variables>`
of the base class's one train step: their gradient is that of :meth:`IWAE.inference_objective`, the others'
that of :meth:`IWAE.objective`, both from the same forward pass. Their optimizer is a copy of the main one
(same class, settings and schedule); Adam's state is per variable, so two copies on disjoint variables make
exactly the updates of one.

References:
    Burda, Grosse & Salakhutdinov, "Importance Weighted Autoencoders", ICLR 2016.
    Rainforth, Kosiorek, Le, Maddison, Igl, Wood & Teh, "Tighter Variational Bounds are Not Necessarily
    Better", ICML 2018 (MIWAE, CIWAE, PIWAE).
    Tucker, Lawson, Gu & Maddison, "Doubly Reparameterized Gradient Estimators for Monte Carlo Objectives",
    ICLR 2019 (DReG for IWAE and RWS).
    Bornschein & Bengio, "Reweighted Wake-Sleep", ICLR 2015.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from vaezoo import bounds
from vaezoo import config as cfg
from vaezoo.models.vae import VAE
from vaezoo.registry import register_model


@keras.saving.register_keras_serializable(package="vaezoo")
class IWAE(VAE):
    """Importance-weighted autoencoder: a VAE trained on the K-sample bound L_K.

    The KL warm-up weight (:class:`vaezoo.callbacks.KLWarmup`) multiplies log p(z) - log q(z|x)
    inside each log-weight. The ``elbo`` metric uses the same K samples.

    Args:
        num_samples: K, importance samples per example (default 5).
        gradient_estimator: ``"reparameterization"`` (default), ``"score_function"``, or ``"dreg"`` (the doubly
            reparameterised encoder gradient, see the module docstring).
        **kwargs: as :class:`vaezoo.VAE`.
    """

    metric_names = ("iwae_bound", "elbo", "reconstruction", "kl")
    GRADIENT_ESTIMATORS = ("reparameterization", "score_function", "dreg")
    config_constraints = {"gradient_estimator": cfg.OneOf(GRADIENT_ESTIMATORS)}
    #: Trains faster without XLA on a CPU (K decoders of tanh layers; docs/results.md#training-throughput).
    xla_by_default = False

    def __init__(self, num_samples: int = 5, **kwargs):
        super().__init__(num_samples=num_samples, **kwargs)
        if self.separate_inference_objective() and self.prior == "vamp":
            raise cfg.ConfigError(
                f"{type(self).__name__} with gradient_estimator={self.gradient_estimator!r} trains the encoder on its "
                "own objective, but the 'vamp' prior is made of the encoder; use gradient_estimator="
                "'reparameterization' or another prior (normal, learned_normal, mixture, flow).")

    def compute_terms(self, x, training=False, seed=None, condition=None):
        terms = super().compute_terms(x, training=training, seed=seed, condition=condition)
        terms["log_w"] = bounds.log_weights(terms["log_px"], terms["log_pz"], terms["log_qz"], self.kl_weight)
        terms["iwae_bound"] = bounds.iwae_bound(terms["log_w"])
        return terms

    def objective(self, terms):
        return -tf.reduce_mean(terms["iwae_bound"])

    def score_signal(self, terms):
        # L_K depends on every z_k jointly: the signal of each sample is the whole bound.
        return tf.broadcast_to(terms["iwae_bound"], tf.shape(terms["log_qz"])), 1.0

    def iwae_bound(self, x, seed=None):
        """The K-sample bound per example, ``[B]`` (nats)."""
        return self.compute_terms(x, training=False, seed=seed)["iwae_bound"]

    # ---- a separate objective for the inference network ------------------------------------

    def separate_inference_objective(self) -> bool:
        """Whether the encoder follows :meth:`inference_objective` instead of :meth:`objective` (DReG here)."""
        return self.gradient_estimator == "dreg"

    def auxiliary_variables(self):
        if not self.separate_inference_objective():
            return []
        return [*self.encoder.trainable_variables, *self.posterior_layer.trainable_variables]

    def auxiliary_loss(self, terms):
        return -tf.reduce_mean(self.inference_objective(terms))

    def default_auxiliary_optimizer(self):
        """A copy of the main optimizer (same class, settings and learning-rate schedule)."""
        config = {**self.optimizer.get_config(), "name": "inference_optimizer"}
        return type(self.optimizer).from_config(config)

    def inference_objective(self, terms) -> tf.Tensor:
        """The per-example surrogate ``[B]`` whose gradient in the inference network is the estimator
        (maximised): here DReG's sum_k stop(w~_k^2) log w_k(z_k(phi)), q's parameters held in log q."""
        return tf.reduce_sum(tf.stop_gradient(self.normalized_weights(terms) ** 2) * self.path_log_weights(terms),
                             axis=0)

    @staticmethod
    def normalized_weights(terms) -> tf.Tensor:
        """w~_k = w_k / sum_j w_j over the samples, ``[K, B]``, held constant."""
        return tf.stop_gradient(tf.nn.softmax(terms["log_w"], axis=0))

    def posterior_parameters_of(self, terms) -> tuple:
        return tuple(terms[f"posterior_{n}"] for n in self.posterior_layer.parameter_names)

    def path_log_weights(self, terms) -> tf.Tensor:
        """log w_k with q's parameters held in log q(z_k|x) but z_k = z(eps_k, phi) live: the log-weights
        whose gradient in phi is the path (pathwise) part only, ``[K, B]``."""
        held = [tf.stop_gradient(p) for p in self.posterior_parameters_of(terms)]
        log_q_held = self.posterior_layer.distribution(*held).log_prob(terms["z"])
        return bounds.log_weights(terms["log_px"], terms["log_pz"], log_q_held, self.kl_weight)


@keras.saving.register_keras_serializable(package="vaezoo")
class MIWAE(IWAE):
    """MIWAE(M, K): the mean of M independent K-sample bounds (Rainforth et al. 2018, eq. 9),

    .. math:: \\mathrm{MIWAE}_{M,K}(x) = \\frac{1}{M}\\sum_{m=1}^M \\log \\frac{1}{K}\\sum_{k=1}^K w_{m,k},

    from M x K samples per example. M = 1 is the IWAE bound; K = 1 the M-sample ELBO. The ``iwae_bound``
    metric is L_{MK} of all the samples (tighter), ``miwae_bound`` the objective.

    Args:
        num_groups: M.
        num_samples: K, samples per group.
        **kwargs: as :class:`IWAE`.
    """

    metric_names = ("miwae_bound", "iwae_bound", "elbo", "reconstruction", "kl")
    config_constraints = {"num_groups": cfg.AT_LEAST_1, "gradient_estimator": cfg.OneOf(("reparameterization",))}

    def __init__(self, num_groups: int = 8, num_samples: int = 8, **kwargs):
        self.num_groups = int(num_groups)
        super().__init__(num_samples=num_samples, **kwargs)

    def samples_per_example(self):
        return self.num_groups * self.num_samples

    def compute_terms(self, x, training=False, seed=None, condition=None):
        terms = super().compute_terms(x, training=training, seed=seed, condition=condition)
        groups = tf.reshape(terms["log_w"], tf.concat([[self.num_groups, self.num_samples], tf.shape(terms["log_w"])[1:]], 0))
        terms["miwae_bound"] = tf.reduce_mean(bounds.iwae_bound(groups, axis=1), axis=0)
        return terms

    def objective(self, terms):
        return -tf.reduce_mean(terms["miwae_bound"])


@keras.saving.register_keras_serializable(package="vaezoo")
class CIWAE(IWAE):
    """CIWAE(beta): beta ELBO + (1 - beta) L_K of the same K samples (Rainforth et al. 2018, eq. 10); the ELBO
    here is the Monte-Carlo mean of the log-weights. beta = 1 is the K-sample ELBO, beta = 0 the IWAE bound.

    Args:
        beta: the weight in [0, 1].
        **kwargs: as :class:`IWAE`.
    """

    metric_names = ("ciwae_bound", "iwae_bound", "elbo", "reconstruction", "kl")
    config_constraints = {"beta": cfg.Range(0.0, 1.0), "gradient_estimator": cfg.OneOf(("reparameterization",))}

    def __init__(self, beta: float = 0.5, **kwargs):
        self.beta = float(beta)
        super().__init__(**kwargs)

    def compute_terms(self, x, training=False, seed=None, condition=None):
        terms = super().compute_terms(x, training=training, seed=seed, condition=condition)
        terms["ciwae_bound"] = self.beta * bounds.elbo(terms["log_w"]) + (1.0 - self.beta) * terms["iwae_bound"]
        return terms

    def objective(self, terms):
        return -tf.reduce_mean(terms["ciwae_bound"])


@keras.saving.register_keras_serializable(package="vaezoo")
class PIWAE(MIWAE):
    """PIWAE(M, K): the decoder maximises L_{MK} (all M x K samples), the encoder MIWAE(M, K) (Rainforth et al.
    2018, section 4): tight bounds for the generative model, a stronger gradient signal for the inference network.
    The two objectives share one forward pass; the encoder's variables have their own copy of the optimizer
    (see the module docstring).

    Args:
        num_groups: M.
        num_samples: K.
        **kwargs: as :class:`IWAE`.
    """

    metric_names = ("iwae_bound", "miwae_bound", "elbo", "reconstruction", "kl")

    def separate_inference_objective(self):
        return True

    def objective(self, terms):
        return -tf.reduce_mean(terms["iwae_bound"])

    def inference_objective(self, terms):
        return terms["miwae_bound"]


@keras.saving.register_keras_serializable(package="vaezoo")
class RWS(IWAE):
    """Reweighted wake-sleep (Bornschein & Bengio 2015), the wake phases: the decoder ascends L_K (its gradient
    sum_k w~_k grad_theta log p(x, z_k)), the encoder the wake-phi update, an estimate of -grad KL(p(z|x) || q(z|x)):

    .. math:: \\text{wake: } \\sum_k \\tilde w_k \\nabla_\\phi \\log q_\\phi(z_k|x) \\; (z_k \\text{ held}), \\qquad
              \\text{dreg: } \\sum_k (\\tilde w_k - \\tilde w_k^2) \\frac{\\partial \\log w_k}{\\partial z_k}
              \\frac{\\partial z_k}{\\partial \\phi}

    (``gradient_estimator``; the second is Tucker et al. 2019's doubly reparameterised form, eq. 7, lower variance).
    The sleep phase (training q on the model's own samples) is not used; the papers found wake-phi better.

    Args:
        num_samples: K.
        gradient_estimator: ``"wake"`` (default) or ``"dreg"``.
        **kwargs: as :class:`IWAE`.
    """

    GRADIENT_ESTIMATORS = ("wake", "dreg")
    config_constraints = {"gradient_estimator": cfg.OneOf(GRADIENT_ESTIMATORS)}

    def __init__(self, gradient_estimator: str = "wake", **kwargs):
        super().__init__(gradient_estimator=gradient_estimator, **kwargs)

    def separate_inference_objective(self):
        return True

    def inference_objective(self, terms):
        w = self.normalized_weights(terms)
        if self.gradient_estimator == "dreg":
            return tf.reduce_sum(tf.stop_gradient(w - w**2) * self.path_log_weights(terms), axis=0)
        q = self.posterior_layer.distribution(*self.posterior_parameters_of(terms))
        return tf.reduce_sum(w * q.log_prob(tf.stop_gradient(terms["z"])), axis=0)


register_model(IWAE, name="iwae")
register_model(IWAE, name="iwae_conv")
register_model(IWAE, name="iwae_dreg")
register_model(MIWAE, name="miwae")
register_model(CIWAE, name="ciwae")
register_model(PIWAE, name="piwae")
register_model(RWS, name="rws")
