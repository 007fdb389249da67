"""Discrete latents by the Concrete / Gumbel-softmax relaxation (Maddison et al. 2017; Jang et al. 2017).

z is ``num_categorical`` one-hot variables of ``num_classes`` classes (flattened: ``latent_dim =
num_categorical * num_classes``), with a uniform categorical prior. Training relaxes each variable to the
Concrete distribution on the simplex: with Gumbel noise g_j = -log(-log u_j),

.. math:: y = \\mathrm{log\\_softmax}((\\ell + g) / \\tau), \\qquad z = e^{y},

differentiable in the logits l; tau -> 0 recovers one-hot samples. The temperature follows
tau_t = max(temperature_end, temperature_start exp(-temperature_decay t)) over optimizer steps t
(Jang et al.'s annealing, applied every step). ``straight_through`` decodes the one-hot argmax in the
forward pass and uses the relaxed sample's gradient.

The KL term, in the two forms the papers use (``kl_estimator``):

* ``"relaxed"`` (Maddison et al.): KL(q_tau || p_tau) between the relaxed posterior and the relaxed uniform
  prior at the same temperature, Monte-Carlo at the sample, computed in log space on the Exp-Concrete
  densities (the Jacobian of z = exp(y) cancels in log q - log p);
* ``"discrete"`` (Jang et al.): the KL between the *discrete* posterior Cat(softmax(l)) and the uniform
  prior, closed form: sum_n sum_k q_nk log q_nk + num_categorical log num_classes.

The default is ``"discrete"``: at Jang et al.'s network and settings the relaxed form plateaus far behind
(37 nats of test NLL, 53 of discrete ELBO, measured in docs/results.md, and the same in a plain re-statement of Jang's notebook,
``benchmarks/gumbel_reference.py``).

Evaluation uses hard one-hot samples c ~ Cat(softmax(l)): ``discrete_elbo`` (one sample: log p(x|c) minus the
discrete KL, a bound on the discrete model's log p(x)) and :meth:`CategoricalVAE.log_weights`
(log p(x|c) + log p(c) - log q(c|x)), so :func:`vaezoo.evaluate.log_likelihood` is the importance-sampled NLL
against the categorical prior. Sampling from the prior gives one-hot codes.

Example:

>>> import vaezoo
>>> model = vaezoo.get("categorical_vae")                 # 20 variables x 10 classes
>>> model.compile()   # metrics: loss, elbo, reconstruction, kl, discrete_elbo
>>> grid = model.traverse(x)                              # doctest: +SKIP  [20, 10, 28, 28, 1]

References:
    Maddison, Mnih & Teh, "The Concrete Distribution", ICLR 2017.
    Jang, Gu & Poole, "Categorical Reparameterization with Gumbel-Softmax", ICLR 2017.
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
tfb = tfp.bijectors

KL_ESTIMATORS = ("relaxed", "discrete")
#: Floor of log z, so that z = exp(y) never underflows to 0 (whose log density would be -inf).
LOG_FLOOR = -80.0


def _relaxed(temperature, logits, num_classes: int) -> tfd.Distribution:
    """The relaxed one-hot (Concrete) law of flattened z ``[..., n * k]`` with logits ``[..., n * k]``."""
    grouped = tf.reshape(logits, tf.concat([tf.shape(logits)[:-1], [-1, num_classes]], 0))
    base = tfd.Independent(tfd.ExpRelaxedOneHotCategorical(temperature, logits=grouped), 1)  # y, event [n, k]
    n = logits.shape[-1] // num_classes
    return tfd.TransformedDistribution(base, tfb.Chain([tfb.Reshape([n * num_classes], [n, num_classes]), tfb.Exp()]))


def _exp_relaxed_log_prob(temperature, logits, y, num_classes: int) -> tf.Tensor:
    """log density of y = log z under the Exp-Concrete law, summed over the variables: ``[...]``."""
    grouped_logits = tf.reshape(logits, tf.concat([tf.shape(logits)[:-1], [-1, num_classes]], 0))
    grouped_y = tf.reshape(y, tf.concat([tf.shape(y)[:-1], [-1, num_classes]], 0))
    return tf.reduce_sum(tfd.ExpRelaxedOneHotCategorical(temperature, logits=grouped_logits).log_prob(grouped_y), -1)


@keras.saving.register_keras_serializable(package="vaezoo")
@dl.register_posterior("concrete")
class ConcretePosterior(dl.Posterior):
    """Features -> logits of ``latent_dim / num_classes`` categorical variables, relaxed to Concrete samples.

    ``encode`` returns ``(logits,)``; ``point`` is the one-hot mode. The temperature is a non-trainable
    weight that :class:`CategoricalVAE` anneals.

    Args:
        latent_dim: num_categorical * num_classes.
        num_classes: classes per variable.
        straight_through: decode the one-hot argmax of the relaxed sample (its gradient is the relaxed one's).
    """

    parameter_names = ("logits",)
    support = "simplex"
    config_keys = {"num_classes": ("num_classes", cfg.Range(2)), "straight_through": ("straight_through", None)}

    def __init__(self, latent_dim: int, num_classes: int = 10, straight_through: bool = False, **kwargs):
        super().__init__(latent_dim, **kwargs)
        if self.latent_dim % int(num_classes):
            raise cfg.ConfigError(f"The concrete posterior needs latent_dim divisible by num_classes={num_classes}, "
                                  f"got latent_dim={latent_dim}.")
        self.num_classes = int(num_classes)
        self.straight_through = bool(straight_through)
        self.projection = keras.layers.Dense(self.latent_dim, name="projection", dtype=self.dtype_policy)

    def build(self, input_shape):
        self.projection.build(input_shape)
        self.temperature = self.add_weight(name="temperature", shape=(), initializer="ones", trainable=False)
        self.built = True

    def parameters(self, features):
        return (tf.cast(self.projection(features), tf.float32),)

    def distribution(self, logits):
        return _relaxed(self.temperature, logits, self.num_classes)

    def draw_noise(self, num_samples, batch_size, seed):
        """Uniform noise in (0, 1): the Gumbel noise is -log(-log u)."""
        return tf.random.stateless_uniform(tf.stack([num_samples, batch_size, self.latent_dim]), seed,
                                           minval=1e-7, maxval=1.0 - 1e-7)

    def _grouped(self, t):
        return tf.reshape(t, tf.concat([tf.shape(t)[:-1], [-1, self.num_classes]], 0))

    def sample_and_log_prob(self, params, noise):
        (logits,) = params
        gumbel = -tf.math.log(-tf.math.log(noise))
        y = tf.nn.log_softmax(self._grouped((logits + gumbel) / self.temperature), axis=-1)
        y = tf.reshape(tf.maximum(y, LOG_FLOOR), tf.shape(noise))
        z = tf.exp(y)
        # log q(z|x) of the relaxed law: the Exp-Concrete density of y minus the Jacobian sum(y) of z = exp(y)
        log_q = _exp_relaxed_log_prob(self.temperature, logits, y, self.num_classes) - tf.reduce_sum(y, -1)
        if self.straight_through:
            hard = tf.reshape(tf.one_hot(tf.argmax(self._grouped(z), -1), self.num_classes), tf.shape(z))
            z = z + tf.stop_gradient(hard - z)
        return z, log_q

    def point(self, params):
        (logits,) = params
        return tf.reshape(tf.one_hot(tf.argmax(self._grouped(logits), -1), self.num_classes), tf.shape(logits))

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes, "straight_through": self.straight_through}


@keras.saving.register_keras_serializable(package="vaezoo")
@dl.register_prior("relaxed_uniform")
class RelaxedUniformPrior(dl.Prior):
    """The uniform prior over ``latent_dim / num_classes`` categorical variables, relaxed at the posterior's
    temperature for the training KL; samples (``from_noise``) are hard one-hot codes.

    ``from_noise`` takes standard normal noise ``[n, latent_dim]`` and returns the one-hot argmax of each
    variable's ``num_classes`` noise values: iid noise makes every class equally likely (builtin ops only).
    """

    support = "simplex"
    config_keys = {"num_classes": ("num_classes", cfg.Range(2))}

    def __init__(self, latent_dim: int, num_classes: int = 10, **kwargs):
        super().__init__(latent_dim, **kwargs)
        self.num_classes = int(num_classes)

    def build(self, input_shape=None):
        self.temperature = self.add_weight(name="temperature", shape=(), initializer="ones", trainable=False)
        self.built = True

    def call(self, inputs=None):
        return _relaxed(self.temperature, tf.zeros([self.latent_dim]), self.num_classes)

    def log_prob(self, z):
        """log p_tau(z) in log space (z from the posterior's sampler, floored at exp(LOG_FLOOR))."""
        y = tf.maximum(tf.math.log(z), LOG_FLOOR)
        zeros = tf.zeros_like(y)
        return _exp_relaxed_log_prob(self.temperature, zeros, y, self.num_classes) - tf.reduce_sum(y, -1)

    def from_noise(self, noise):
        noise = tf.convert_to_tensor(noise, tf.float32)
        grouped = tf.reshape(noise, [-1, self.latent_dim // self.num_classes, self.num_classes])
        return tf.reshape(tf.one_hot(tf.argmax(grouped, -1), self.num_classes), [-1, self.latent_dim])

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes}


@keras.saving.register_keras_serializable(package="vaezoo")
class CategoricalVAE(VAE):
    """A VAE with ``num_categorical`` categorical latents of ``num_classes`` classes, trained by relaxation.

    Args:
        num_categorical: number of categorical variables (Jang et al. on MNIST: 20).
        num_classes: classes per variable (10).
        temperature_start, temperature_end, temperature_decay: tau_t = max(end, start exp(-decay t)).
        straight_through: decode hard one-hot samples in training (straight-through Gumbel-softmax).
        kl_estimator: ``"discrete"`` (default: closed-form KL of the categorical posterior against the uniform
            prior, Jang et al.'s analytic form) or ``"relaxed"`` (Monte-Carlo KL of the relaxed laws; it trains
            far worse at Jang et al.'s settings, see docs/results.md).
        **kwargs: as :class:`vaezoo.VAE`; ``latent_dim`` must be num_categorical * num_classes.
    """

    metric_names = ("elbo", "reconstruction", "kl", "discrete_elbo")
    config_constraints = {"num_categorical": cfg.AT_LEAST_1, "temperature_start": cfg.POSITIVE,
                          "temperature_end": cfg.POSITIVE, "temperature_decay": cfg.NON_NEGATIVE,
                          "kl_estimator": cfg.OneOf(KL_ESTIMATORS), "posterior": cfg.OneOf(("concrete",)),
                          "prior": cfg.OneOf(("relaxed_uniform",)),
                          "gradient_estimator": cfg.OneOf(("reparameterization",))}

    def __init__(self, num_categorical: int = 20, num_classes: int = 10, temperature_start: float = 1.0,
                 temperature_end: float = 0.5, temperature_decay: float = 1e-5, straight_through: bool = False,
                 kl_estimator: str = "discrete", latent_dim: int = 200, posterior: str = "concrete",
                 prior: str = "relaxed_uniform", **kwargs):
        if latent_dim != num_categorical * num_classes:
            raise cfg.ConfigError(f"categorical_vae's latent_dim must be num_categorical * num_classes = "
                                  f"{num_categorical} * {num_classes} = {num_categorical * num_classes}, got {latent_dim}.")
        if temperature_end > temperature_start:
            raise cfg.ConfigError(f"temperature_end ({temperature_end}) must not exceed temperature_start "
                                  f"({temperature_start}): the temperature is annealed downwards.")
        self.num_categorical = int(num_categorical)
        self.num_classes = int(num_classes)
        self.temperature_start = float(temperature_start)
        self.temperature_end = float(temperature_end)
        self.temperature_decay = float(temperature_decay)
        self.straight_through = bool(straight_through)
        self.kl_estimator = kl_estimator
        if straight_through and kl_estimator != "discrete":
            raise cfg.ConfigError("straight_through decodes hard one-hot codes, at which the relaxed densities of "
                                  "kl_estimator 'relaxed' are not defined: use kl_estimator 'discrete' with it.")
        super().__init__(latent_dim=latent_dim, posterior=posterior, prior=prior, **kwargs)

    def component_options(self):
        return {**super().component_options(), "num_classes": self.num_classes, "straight_through": self.straight_through}

    def temperature(self, step=None):
        """tau at optimizer step ``step`` (default: the current one)."""
        if step is None:
            step = self.optimizer.iterations if self.optimizer is not None else 0
        tau = self.temperature_start * tf.exp(-self.temperature_decay * tf.cast(step, tf.float32))
        return tf.maximum(tf.cast(self.temperature_end, tf.float32), tau)

    def prior_log_prob(self, z, condition=None):
        return self.prior_layer.log_prob(z)  # in log space, floored: no -inf where z underflows

    def discrete_kl(self, logits) -> tf.Tensor:
        """KL(Cat(softmax(logits)) || uniform), summed over the variables, ``[B]`` (closed form)."""
        grouped = tf.reshape(logits, [-1, self.num_categorical, self.num_classes])
        log_q = tf.nn.log_softmax(grouped, -1)
        return tf.reduce_sum(tf.exp(log_q) * log_q, [-2, -1]) + self.num_categorical * math.log(self.num_classes)

    def _hard_samples(self, logits, num_samples, seed):
        """c ~ Cat(softmax(logits)) by Gumbel-max: one-hot z ``[K, B, d]`` and log q(c|x) ``[K, B]``."""
        u = self.posterior_noise(num_samples, tf.shape(logits)[0], seed)  # by example, as under any replica split
        grouped = tf.reshape(logits, [-1, self.num_categorical, self.num_classes])
        gumbel = tf.reshape(-tf.math.log(-tf.math.log(u)), [num_samples, -1, self.num_categorical, self.num_classes])
        one_hot = tf.one_hot(tf.argmax(grouped[None] + gumbel, -1), self.num_classes)
        log_q = tf.reduce_sum(one_hot * tf.nn.log_softmax(grouped, -1)[None], [-2, -1])
        return tf.reshape(one_hot, [num_samples, -1, self.latent_dim]), log_q

    def compute_terms(self, x, training=False, seed=None, condition=None):
        if training and self.optimizer is not None:
            tau = self.temperature()
            self.posterior_layer.temperature.assign(tau)
            self.prior_layer.temperature.assign(tau)
        seed = self.next_seed(seed)
        terms = super().compute_terms(x, training=training, seed=seed, condition=condition)
        logits = terms["posterior_logits"]
        discrete_kl = self.discrete_kl(logits)
        hard, _ = self._hard_samples(logits, 1, tf.random.experimental.stateless_fold_in(seed, 3))
        log_px_hard = self.likelihood_distribution(hard).log_prob(x)[0]
        terms["discrete_elbo"] = log_px_hard - discrete_kl
        if self.kl_estimator == "discrete":
            terms["kl"] = discrete_kl
            terms["elbo"] = -(terms["reconstruction"] + discrete_kl)
        return terms

    def log_weights(self, x, num_samples: int, seed=None):
        """log p(x|c_k) + log p(c_k) - log q(c_k|x) with hard samples c_k ~ Cat(softmax(logits)), ``[K, B]``."""
        x = self.check_inputs(x)
        (logits,) = self.posterior_parameters(x)
        z, log_q = self._hard_samples(logits, num_samples, self.next_seed(seed))
        log_prior = -self.num_categorical * math.log(self.num_classes)
        return self.likelihood_distribution(z).log_prob(x) + log_prior - log_q

    def traverse(self, x, steps=None, limit=None):
        """Variable i set to each of its classes, the others at x's mode: ``[num_categorical, num_classes,
        *data_shape]`` likelihood means (``steps``/``limit`` are the Gaussian traversal's and are ignored)."""
        x = np.asarray(x, dtype="float32").reshape((1, *self.data_shape))
        code = np.asarray(self.code(x)).reshape(self.num_categorical, self.num_classes)
        grid = np.repeat(code[None, None], self.num_categorical * self.num_classes, 0).reshape(
            self.num_categorical, self.num_classes, self.num_categorical, self.num_classes)
        for i in range(self.num_categorical):
            grid[i, :, i, :] = np.eye(self.num_classes)
        images = self.decode(grid.reshape(-1, self.latent_dim).astype("float32"))
        return np.asarray(images).reshape(self.num_categorical, self.num_classes, *self.data_shape)


register_model(CategoricalVAE, name="categorical_vae")
