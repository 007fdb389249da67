"""Keras 3 layers whose weights are random variables: a factorised Gaussian q_phi(theta) and a
Gaussian hyperprior p_alpha(theta) per layer, for full variational Bayes over a network.

``tfp.layers.DenseReparameterization`` and ``DenseFlipout`` are Keras 2 layers (they cannot be
added to a Keras 3 model); these are written on ``tfp.distributions`` the way
:mod:`vaezoo.layers` is. Every weight w (kernel and bias) has

.. math::

    q_\\phi(w) = N(\\mu_w, \\sigma_w^2), \\quad \\sigma_w = \\mathrm{softplus}(\\rho_w), \\qquad
    p_\\alpha(w) = N(0, \\alpha^2),

one alpha per layer, learned by maximising the same bound (empirical Bayes) or fixed. The weight
term of the bound, KL(q_phi(theta) || p_alpha(theta)), is closed form
(:meth:`BayesianDense.kl_divergence`), or estimated at the drawn weights as
log q_phi(theta~) - log p_alpha(theta~) (the estimator of Kingma & Welling's eq. 9-10).

A layer applies to inputs ``[S, M, d]``: S weight draws, M rows per draw, in one of three modes:

* ``"sample"``: theta~ = h_phi(zeta) = mu + sigma * zeta, zeta ~ N(0, I) (the reparameterisation of
  eq. 7), one draw per leading index s, shared by its M rows;
* ``"flipout"``: one shared perturbation sigma * zeta, decorrelated per row by random signs,
  x (mu + (sigma * zeta) o (s r^T)) = x mu + ((x o s)(sigma * zeta)) o r (Wen et al. 2018): every row
  sees a weight draw of the same law as ``"sample"``, and the gradient's variance falls with M;
* ``"mean"``: the posterior mean weights mu (deterministic; what exports use by default).

Example:

>>> import tensorflow as tf
>>> from vaezoo import bayesian
>>> net = bayesian.BayesianMLP(units=(64, 784), activation="relu")
>>> out = net.apply(tf.zeros([1, 5, 32]), mode="sample", seed=tf.constant([1, 2]))   # [1, 5, 784]
>>> weight_kl = net.kl_divergence()                                                 # nats, scalar

References:
    Kingma & Welling, "Auto-Encoding Variational Bayes", ICLR 2014, appendix F ("Full VB").
    Blundell et al., "Weight Uncertainty in Neural Networks", ICML 2015.
    Wen et al., "Flipout: Efficient Pseudo-Independent Weight Perturbations on Mini-Batches", ICLR 2018.
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf
import tensorflow_probability as tfp

from vaezoo import distribute

tfd = tfp.distributions

_register = keras.saving.register_keras_serializable(package="vaezoo")

MODES = ("sample", "flipout", "mean")


def _inverse_softplus(y: float) -> float:
    return y + math.log(-math.expm1(-y))


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"Unknown weight mode {mode!r}; valid choices: {', '.join(MODES)}.")


@_register
class BayesianDense(keras.layers.Layer):
    """A dense layer with a factorised Gaussian posterior over its kernel and bias.

    Args:
        units: output width.
        activation: a Keras activation name, or None.
        prior_scale: alpha of the hyperprior N(0, alpha^2) (its initial value if learned).
        learn_prior_scale: learn alpha by maximising the bound (empirical Bayes) instead of fixing it.
        posterior_init_scale: the initial sigma of every weight (the means start at Glorot-uniform
            kernels and zero biases).
        seed: seed of the kernel means' initialiser.
    """

    def __init__(self, units: int, activation: str | None = None, prior_scale: float = 1.0,
                 learn_prior_scale: bool = True, posterior_init_scale: float = 1e-3, seed: int | None = None,
                 **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if not prior_scale > 0 or not posterior_init_scale > 0:
            raise ValueError(f"BayesianDense needs prior_scale > 0 and posterior_init_scale > 0, got "
                             f"prior_scale={prior_scale!r}, posterior_init_scale={posterior_init_scale!r}.")
        self.units = int(units)
        self.activation = activation
        self.prior_scale = float(prior_scale)
        self.learn_prior_scale = bool(learn_prior_scale)
        self.posterior_init_scale = float(posterior_init_scale)
        self.seed = seed
        self._activation = keras.activations.get(activation)

    def build(self, input_shape):
        d = int(input_shape[-1])
        raw = keras.initializers.Constant(_inverse_softplus(self.posterior_init_scale))
        self.kernel_loc = self.add_weight(name="kernel_loc", shape=(d, self.units),
                                          initializer=keras.initializers.GlorotUniform(seed=self.seed))
        self.kernel_raw_scale = self.add_weight(name="kernel_raw_scale", shape=(d, self.units), initializer=raw)
        self.bias_loc = self.add_weight(name="bias_loc", shape=(self.units,), initializer="zeros")
        self.bias_raw_scale = self.add_weight(name="bias_raw_scale", shape=(self.units,), initializer=raw)
        self.log_prior_scale = self.add_weight(name="log_prior_scale", shape=(),
                                               initializer=keras.initializers.Constant(math.log(self.prior_scale)),
                                               trainable=self.learn_prior_scale)
        self.built = True

    @property
    def input_dim(self) -> int:
        return int(self.kernel_loc.shape[0])

    # ---- distributions ------------------------------------------------------------------------

    def posterior(self) -> tuple[tfd.Distribution, tfd.Distribution]:
        """q_phi of the kernel ``[d, units]`` and of the bias ``[units]`` (elementwise Normals)."""
        return (tfd.Normal(self.kernel_loc, tf.nn.softplus(self.kernel_raw_scale)),
                tfd.Normal(self.bias_loc, tf.nn.softplus(self.bias_raw_scale)))

    def prior(self) -> tfd.Distribution:
        """p_alpha(w) = N(0, alpha^2), the same for every weight of the layer."""
        return tfd.Normal(tf.constant(0.0), tf.exp(self.log_prior_scale))

    def kl_divergence(self) -> tf.Tensor:
        """KL(q_phi(theta) || p_alpha(theta)) of the layer's weights, closed form (nats, scalar)."""
        prior = self.prior()
        return sum(tf.reduce_sum(tfd.kl_divergence(q, prior)) for q in self.posterior())

    def optimal_prior_scale(self) -> tf.Tensor:
        """The alpha that minimises the closed-form KL for the current q: alpha^2 = mean(mu^2 + sigma^2)."""
        second = [tf.reshape(q.loc**2 + q.scale**2, [-1]) for q in self.posterior()]
        return tf.sqrt(tf.reduce_mean(tf.concat(second, 0)))

    def num_weights(self) -> int:
        return int(self.kernel_loc.shape[0] * self.units + self.units)

    # ---- applying the layer -------------------------------------------------------------------

    def draw_noise(self, num_draws, rows, seed, mode: str) -> dict[str, tf.Tensor]:
        """The standard normal (and sign) noise of one application, from a stateless ``seed``."""
        _check_mode(mode)
        d, u = self.input_dim, self.units
        seeds = [tf.random.experimental.stateless_fold_in(seed, i) for i in range(4)]
        if mode == "sample":
            return {"kernel": tf.random.stateless_normal(tf.stack([num_draws, d, u]), seeds[0]),
                    "bias": tf.random.stateless_normal(tf.stack([num_draws, u]), seeds[1])}
        if mode == "flipout":
            def signs(shape, s):
                return 2.0 * tf.cast(tf.random.stateless_uniform(shape, s, maxval=2, dtype=tf.int32), tf.float32) - 1.0
            return {"kernel": tf.random.stateless_normal([d, u], seeds[0]),
                    "bias": tf.random.stateless_normal([u], seeds[1]),
                    # per row of the global batch, so the signs do not depend on a tf.distribute split
                    "sign_in": distribute.replica_rows(lambda m: signs(tf.stack([num_draws, m, d]), seeds[2]),
                                                       rows, axis=1),
                    "sign_out": distribute.replica_rows(lambda m: signs(tf.stack([num_draws, m, u]), seeds[3]),
                                                        rows, axis=1)}
        return {}

    def call(self, inputs, noise=None, mode: str = "mean"):
        """``[S, M, d]`` -> ``[S, M, units]`` under the weights of ``mode`` (noise from :meth:`draw_noise`)."""
        _check_mode(mode)
        h = tf.convert_to_tensor(inputs, tf.float32)
        lead = tf.shape(h)[:-1]
        flat = tf.reshape(h, [-1, self.input_dim])
        mean_out = tf.reshape(tf.matmul(flat, self.kernel_loc), tf.concat([lead, [self.units]], 0)) + self.bias_loc
        if mode == "mean":
            out = mean_out
        elif mode == "sample":
            kernel = self.kernel_loc + tf.nn.softplus(self.kernel_raw_scale) * noise["kernel"]  # [S, d, u]
            bias = self.bias_loc + tf.nn.softplus(self.bias_raw_scale) * noise["bias"]  # [S, u]
            out = tf.matmul(h, kernel) + bias[:, None, :]
        else:  # flipout
            delta = tf.nn.softplus(self.kernel_raw_scale) * noise["kernel"]
            perturbed = tf.matmul(tf.reshape(h * noise["sign_in"], [-1, self.input_dim]), delta)
            perturbed = tf.reshape(perturbed, tf.concat([lead, [self.units]], 0))
            bias_delta = tf.nn.softplus(self.bias_raw_scale) * noise["bias"]
            out = mean_out + (perturbed + bias_delta) * noise["sign_out"]
        return self._activation(out)

    def log_ratio(self, noise) -> tf.Tensor:
        """log p_alpha(theta~) - log q_phi(theta~) at the ``"sample"`` draws of ``noise``, ``[S]``."""
        prior = self.prior()
        total = 0.0
        for q, zeta in zip(self.posterior(), (noise["kernel"], noise["bias"])):
            w = q.loc + q.scale * zeta
            axes = list(range(1, zeta.shape.rank))
            total += tf.reduce_sum(prior.log_prob(w) - q.log_prob(w), axis=axes)
        return total

    def get_config(self):
        return {**super().get_config(), "units": self.units, "activation": self.activation,
                "prior_scale": self.prior_scale, "learn_prior_scale": self.learn_prior_scale,
                "posterior_init_scale": self.posterior_init_scale, "seed": self.seed}


@_register
class BayesianMLP(keras.layers.Layer):
    """A stack of :class:`BayesianDense` layers (the last one without activation).

    Args:
        units: widths of the layers, the last one the output.
        activation: hidden activation.
        prior_scale, learn_prior_scale, posterior_init_scale: as :class:`BayesianDense`, for every layer.
        seed: seed of the kernel means' initialisers.
    """

    def __init__(self, units, activation: str = "relu", prior_scale: float = 1.0, learn_prior_scale: bool = True,
                 posterior_init_scale: float = 1e-3, seed: int | None = None, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.units = tuple(int(u) for u in units)
        self.activation = activation
        self.prior_scale = float(prior_scale)
        self.learn_prior_scale = bool(learn_prior_scale)
        self.posterior_init_scale = float(posterior_init_scale)
        self.seed = seed
        self.dense_layers = [
            BayesianDense(u, activation if i < len(self.units) - 1 else None, prior_scale=prior_scale,
                          learn_prior_scale=learn_prior_scale, posterior_init_scale=posterior_init_scale,
                          seed=None if seed is None else seed + i, name=f"bayesian_dense_{i}")
            for i, u in enumerate(self.units)
        ]

    def build(self, input_shape):
        d = input_shape[-1]
        for layer in self.dense_layers:
            layer.build((None, d))
            d = layer.units
        self.built = True

    def apply(self, inputs, mode: str = "mean", seed=None, return_log_ratio: bool = False):
        """``[S, M, d]`` -> ``[S, M, units[-1]]``; one weight draw per s (``"sample"``), per row
        (``"flipout"``) or the mean weights. With ``return_log_ratio`` also log p(theta~) - log q(theta~)
        ``[S]`` of the draws (``"sample"`` only)."""
        _check_mode(mode)
        if mode != "mean" and seed is None:
            raise ValueError(f"BayesianMLP mode {mode!r} needs a stateless seed (int32[2]).")
        if return_log_ratio and mode != "sample":
            raise ValueError(f"The log-ratio at the drawn weights needs mode 'sample', got {mode!r}.")
        h = tf.convert_to_tensor(inputs, tf.float32)
        num_draws, rows = tf.shape(h)[0], tf.shape(h)[1]
        log_ratio = tf.zeros([num_draws])
        for i, layer in enumerate(self.dense_layers):
            noise = None if mode == "mean" else layer.draw_noise(
                num_draws, rows, tf.random.experimental.stateless_fold_in(seed, i), mode)
            h = layer(h, noise=noise, mode=mode)
            if return_log_ratio:
                log_ratio += layer.log_ratio(noise)
        return (h, log_ratio) if return_log_ratio else h

    def call(self, inputs):
        """The posterior-mean network on ``[M, d]`` inputs."""
        return self.apply(tf.convert_to_tensor(inputs, tf.float32)[None], mode="mean")[0]

    def kl_divergence(self) -> tf.Tensor:
        """KL(q_phi(theta) || p_alpha(theta)) over every layer, closed form (nats)."""
        return tf.add_n([layer.kl_divergence() for layer in self.dense_layers])

    def num_weights(self) -> int:
        return sum(layer.num_weights() for layer in self.dense_layers)

    def get_config(self):
        return {**super().get_config(), "units": list(self.units), "activation": self.activation,
                "prior_scale": self.prior_scale, "learn_prior_scale": self.learn_prior_scale,
                "posterior_init_scale": self.posterior_init_scale, "seed": self.seed}
