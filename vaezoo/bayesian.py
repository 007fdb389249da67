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


class _BayesianLayer(keras.layers.Layer):
    """The weights of one layer as random variables: q_phi a factorised Gaussian over ``kernel`` and
    ``bias`` (mean and softplus scale each), p_alpha = N(0, alpha^2). Subclasses give the linear map
    (:meth:`_apply_shared`: one kernel for all rows; :meth:`_apply_per_draw`: kernel s for draw s) and
    the kernel's shape; the three modes, the noise, the KL and the log-ratio are written here once."""

    def __init__(self, activation: str | None = None, prior_scale: float = 1.0, learn_prior_scale: bool = True,
                 posterior_init_scale: float = 1e-3, seed: int | None = None, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if not prior_scale > 0 or not posterior_init_scale > 0:
            raise ValueError(f"{type(self).__name__} needs prior_scale > 0 and posterior_init_scale > 0, got "
                             f"prior_scale={prior_scale!r}, posterior_init_scale={posterior_init_scale!r}.")
        self.activation = activation
        self.prior_scale = float(prior_scale)
        self.learn_prior_scale = bool(learn_prior_scale)
        self.posterior_init_scale = float(posterior_init_scale)
        self.seed = seed
        self._activation = keras.activations.get(activation)

    def _add_posterior_weights(self, kernel_shape, bias_size: int):
        raw = keras.initializers.Constant(_inverse_softplus(self.posterior_init_scale))
        self.kernel_loc = self.add_weight(name="kernel_loc", shape=tuple(kernel_shape),
                                          initializer=keras.initializers.GlorotUniform(seed=self.seed))
        self.kernel_raw_scale = self.add_weight(name="kernel_raw_scale", shape=tuple(kernel_shape), initializer=raw)
        self.bias_loc = self.add_weight(name="bias_loc", shape=(bias_size,), initializer="zeros")
        self.bias_raw_scale = self.add_weight(name="bias_raw_scale", shape=(bias_size,), initializer=raw)
        self.log_prior_scale = self.add_weight(name="log_prior_scale", shape=(),
                                               initializer=keras.initializers.Constant(math.log(self.prior_scale)),
                                               trainable=self.learn_prior_scale)

    # sizes of the inputs' and outputs' last axis (the features Flipout's signs act on)
    @property
    def input_dim(self) -> int:
        raise NotImplementedError

    @property
    def output_dim(self) -> int:
        return int(self.bias_loc.shape[0])

    # ---- distributions ------------------------------------------------------------------------

    def posterior(self) -> tuple[tfd.Distribution, tfd.Distribution]:
        """q_phi of the kernel and of the bias ``[out]`` (elementwise Normals)."""
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
        return int(math.prod(self.kernel_loc.shape) + self.bias_loc.shape[0])

    # ---- applying the layer -------------------------------------------------------------------

    def draw_noise(self, num_draws, rows, seed, mode: str) -> dict[str, tf.Tensor]:
        """The standard normal (and sign) noise of one application, from a stateless ``seed``."""
        _check_mode(mode)
        kernel_shape, u, d = list(self.kernel_loc.shape), self.output_dim, self.input_dim
        seeds = [tf.random.experimental.stateless_fold_in(seed, i) for i in range(4)]
        if mode == "sample":
            return {"kernel": tf.random.stateless_normal(tf.concat([[num_draws], kernel_shape], 0), seeds[0]),
                    "bias": tf.random.stateless_normal(tf.stack([num_draws, u]), seeds[1])}
        if mode == "flipout":
            def signs(shape, s):
                return 2.0 * tf.cast(tf.random.stateless_uniform(shape, s, maxval=2, dtype=tf.int32), tf.float32) - 1.0
            return {"kernel": tf.random.stateless_normal(kernel_shape, seeds[0]),
                    "bias": tf.random.stateless_normal([u], seeds[1]),
                    # per row of the global batch, so the signs do not depend on a tf.distribute split
                    "sign_in": distribute.replica_rows(lambda m: signs(tf.stack([num_draws, m, d]), seeds[2]),
                                                       rows, axis=1),
                    "sign_out": distribute.replica_rows(lambda m: signs(tf.stack([num_draws, m, u]), seeds[3]),
                                                        rows, axis=1)}
        return {}

    def _apply_shared(self, h, kernel):
        """``h [S, M, ...]`` under one kernel for every row."""
        raise NotImplementedError

    def _apply_per_draw(self, h, kernels):
        """``h [S, M, ...]`` with ``kernels [S, ...]``: row block s under kernel s."""
        raise NotImplementedError

    def _per_row(self, t, rank: int):
        """``[S, M, c]`` (a sign per row and feature) broadcast over the spatial axes of a rank-``rank`` tensor."""
        return tf.reshape(t, tf.concat([tf.shape(t)[:2], [1] * (rank - 3), tf.shape(t)[2:]], 0))

    def call(self, inputs, noise=None, mode: str = "mean"):
        """``[S, M, ..., in]`` -> ``[S, M, ..., out]`` under the weights of ``mode`` (noise from :meth:`draw_noise`)."""
        _check_mode(mode)
        h = tf.convert_to_tensor(inputs, tf.float32)
        rank = h.shape.rank
        mean_out = self._apply_shared(h, self.kernel_loc) + self.bias_loc
        if mode == "mean":
            out = mean_out
        elif mode == "sample":
            kernel = self.kernel_loc + tf.nn.softplus(self.kernel_raw_scale) * noise["kernel"]  # [S, *kernel]
            bias = self.bias_loc + tf.nn.softplus(self.bias_raw_scale) * noise["bias"]  # [S, out]
            bias = tf.reshape(bias, tf.concat([tf.shape(bias)[:1], [1] * (rank - 2), tf.shape(bias)[1:]], 0))
            out = self._apply_per_draw(h, kernel) + bias
        else:  # flipout
            delta = tf.nn.softplus(self.kernel_raw_scale) * noise["kernel"]
            perturbed = self._apply_shared(h * self._per_row(noise["sign_in"], rank), delta)
            bias_delta = tf.nn.softplus(self.bias_raw_scale) * noise["bias"]
            out = mean_out + (perturbed + bias_delta) * self._per_row(noise["sign_out"], rank)
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
        return {**super().get_config(), "activation": self.activation, "prior_scale": self.prior_scale,
                "learn_prior_scale": self.learn_prior_scale, "posterior_init_scale": self.posterior_init_scale,
                "seed": self.seed}


@_register
class BayesianDense(_BayesianLayer):
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
        super().__init__(activation, prior_scale, learn_prior_scale, posterior_init_scale, seed, **kwargs)
        self.units = int(units)

    def build(self, input_shape):
        self._add_posterior_weights((int(input_shape[-1]), self.units), self.units)
        self.built = True

    @property
    def input_dim(self) -> int:
        return int(self.kernel_loc.shape[0])

    def output_shape_for(self, shape):
        return (*shape[:-1], self.units)

    def _apply_shared(self, h, kernel):
        flat = tf.matmul(tf.reshape(h, [-1, self.input_dim]), kernel)
        return tf.reshape(flat, tf.concat([tf.shape(h)[:-1], [self.units]], 0))

    def _apply_per_draw(self, h, kernels):
        return tf.matmul(h, kernels)  # [S, M, d] @ [S, d, u]

    def get_config(self):
        return {**super().get_config(), "units": self.units}


PADDINGS = ("same", "valid")


class _BayesianConv(_BayesianLayer):
    """Shared by the 2-D convolutions: square ``kernel_size``, ``strides``, ``padding``, on ``[S, M, H, W, C]``."""

    def __init__(self, filters: int, kernel_size: int = 4, strides: int = 2, padding: str = "same",
                 activation: str | None = None, prior_scale: float = 1.0, learn_prior_scale: bool = True,
                 posterior_init_scale: float = 1e-3, seed: int | None = None, **kwargs):
        super().__init__(activation, prior_scale, learn_prior_scale, posterior_init_scale, seed, **kwargs)
        if padding not in PADDINGS:
            raise ValueError(f"Unknown padding {padding!r}; valid choices: {', '.join(PADDINGS)}.")
        self.filters = int(filters)
        self.kernel_size = int(kernel_size)
        self.strides = int(strides)
        self.padding = padding

    def _op(self, x, kernel):
        """``x [N, H, W, C]`` under ``kernel``: ``[N, H', W', filters]``."""
        raise NotImplementedError

    def _apply_shared(self, h, kernel):
        shape = tf.shape(h)
        out = self._op(tf.reshape(h, tf.concat([[-1], shape[2:]], 0)), kernel)
        return tf.reshape(out, tf.concat([shape[:2], tf.shape(out)[1:]], 0))

    def _apply_per_draw(self, h, kernels):
        return tf.map_fn(lambda args: self._op(args[0], args[1]), (h, kernels),
                         fn_output_signature=tf.TensorSpec(None, tf.float32))

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "kernel_size": self.kernel_size,
                "strides": self.strides, "padding": self.padding}


@_register
class BayesianConv2D(_BayesianConv):
    """A 2-D convolution (as ``keras.layers.Conv2D``, channels last) with a factorised Gaussian posterior
    over its kernel ``[k, k, in, filters]`` and bias. Inputs ``[S, M, H, W, in]``; Flipout's signs are per
    row and channel (Wen et al.'s convolutional form). Args as :class:`BayesianDense`, plus ``filters``,
    ``kernel_size``, ``strides`` and ``padding`` (``"same"`` or ``"valid"``)."""

    def build(self, input_shape):
        k = self.kernel_size
        self._add_posterior_weights((k, k, int(input_shape[-1]), self.filters), self.filters)
        self.built = True

    @property
    def input_dim(self) -> int:
        return int(self.kernel_loc.shape[2])

    def _op(self, x, kernel):
        return tf.nn.conv2d(x, kernel, self.strides, self.padding.upper())


@_register
class BayesianConv2DTranspose(_BayesianConv):
    """A transposed 2-D convolution (as ``keras.layers.Conv2DTranspose``: kernel ``[k, k, filters, in]``)
    with a factorised Gaussian posterior over its kernel and bias; the decoder's upsampling layer. Output
    size per spatial axis: ``H * strides`` (``"same"``) or ``(H - 1) * strides + k`` (``"valid"``)."""

    def build(self, input_shape):
        k = self.kernel_size
        self._add_posterior_weights((k, k, self.filters, int(input_shape[-1])), self.filters)
        self.built = True

    @property
    def input_dim(self) -> int:
        return int(self.kernel_loc.shape[3])

    def output_size(self, size):
        return size * self.strides if self.padding == "same" else (size - 1) * self.strides + self.kernel_size

    def output_shape_for(self, shape):
        return (shape[0], self.output_size(shape[1]), self.output_size(shape[2]), self.filters)

    def _op(self, x, kernel):
        shape = tf.shape(x)
        out_shape = tf.stack([shape[0], self.output_size(shape[1]), self.output_size(shape[2]), self.filters])
        return tf.nn.conv2d_transpose(x, kernel, out_shape, self.strides, self.padding.upper())


class _BayesianStack(keras.layers.Layer):
    """Bayesian layers applied in turn (``self.stack``), with an optional reshape of the features after
    layer ``reshape_after`` to ``reshape_to``; the weight draws, the KL and the log-ratio of all layers."""

    reshape_after: int | None = None
    reshape_to: tuple = ()

    def __init__(self, activation: str = "relu", prior_scale: float = 1.0, learn_prior_scale: bool = True,
                 posterior_init_scale: float = 1e-3, seed: int | None = None, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.activation = activation
        self.prior_scale = float(prior_scale)
        self.learn_prior_scale = bool(learn_prior_scale)
        self.posterior_init_scale = float(posterior_init_scale)
        self.seed = seed

    @property
    def stack(self) -> list:
        """The Bayesian layers, in order."""
        raise NotImplementedError

    def apply(self, inputs, mode: str = "mean", seed=None, return_log_ratio: bool = False):
        """``[S, M, d]`` -> ``[S, M, *output]``; one weight draw per s (``"sample"``), per row
        (``"flipout"``) or the mean weights. With ``return_log_ratio`` also log p(theta~) - log q(theta~)
        ``[S]`` of the draws (``"sample"`` only)."""
        _check_mode(mode)
        if mode != "mean" and seed is None:
            raise ValueError(f"{type(self).__name__} mode {mode!r} needs a stateless seed (int32[2]).")
        if return_log_ratio and mode != "sample":
            raise ValueError(f"The log-ratio at the drawn weights needs mode 'sample', got {mode!r}.")
        h = tf.convert_to_tensor(inputs, tf.float32)
        num_draws, rows = tf.shape(h)[0], tf.shape(h)[1]
        log_ratio = tf.zeros([num_draws])
        for i, layer in enumerate(self.stack):
            noise = None if mode == "mean" else layer.draw_noise(
                num_draws, rows, tf.random.experimental.stateless_fold_in(seed, i), mode)
            h = layer(h, noise=noise, mode=mode)
            if return_log_ratio:
                log_ratio += layer.log_ratio(noise)
            if i == self.reshape_after:
                h = tf.reshape(h, tf.concat([[num_draws, rows], self.reshape_to], 0))
        return (h, log_ratio) if return_log_ratio else h

    def call(self, inputs):
        """The posterior-mean network on ``[M, d]`` inputs."""
        return self.apply(tf.convert_to_tensor(inputs, tf.float32)[None], mode="mean")[0]

    def kl_divergence(self) -> tf.Tensor:
        """KL(q_phi(theta) || p_alpha(theta)) over every layer, closed form (nats)."""
        return tf.add_n([layer.kl_divergence() for layer in self.stack])

    def num_weights(self) -> int:
        return sum(layer.num_weights() for layer in self.stack)

    def _options(self):
        return dict(prior_scale=self.prior_scale, learn_prior_scale=self.learn_prior_scale,
                    posterior_init_scale=self.posterior_init_scale)

    def _seed(self, i):
        return None if self.seed is None else self.seed + i

    def get_config(self):
        return {**super().get_config(), "activation": self.activation, **self._options(), "seed": self.seed}


@_register
class BayesianMLP(_BayesianStack):
    """A stack of :class:`BayesianDense` layers (the last one without activation).

    Args:
        units: widths of the layers, the last one the output.
        activation: hidden activation.
        prior_scale, learn_prior_scale, posterior_init_scale: as :class:`BayesianDense`, for every layer.
        seed: seed of the kernel means' initialisers.
    """

    def __init__(self, units, activation: str = "relu", prior_scale: float = 1.0, learn_prior_scale: bool = True,
                 posterior_init_scale: float = 1e-3, seed: int | None = None, **kwargs):
        super().__init__(activation, prior_scale, learn_prior_scale, posterior_init_scale, seed, **kwargs)
        self.units = tuple(int(u) for u in units)
        self.dense_layers = [
            BayesianDense(u, activation if i < len(self.units) - 1 else None, **self._options(), seed=self._seed(i),
                          name=f"bayesian_dense_{i}")
            for i, u in enumerate(self.units)
        ]

    @property
    def stack(self) -> list:
        return self.dense_layers

    def build(self, input_shape):
        d = input_shape[-1]
        for layer in self.dense_layers:
            layer.build((None, d))
            d = layer.units
        self.built = True

    def get_config(self):
        return {**super().get_config(), "units": list(self.units)}


@_register
class BayesianConvDecoder(_BayesianStack):
    """z -> raw likelihood parameters ``[*data_shape]`` with random weights: vaezoo's conv decoder
    (:func:`vaezoo.networks.build_decoder`, ``architecture="conv"``) made of Bayesian layers: dense
    layers of ``reversed(hidden_units)``, a dense layer to ``(H / 2^L, W / 2^L, conv_filters[-1])``, then
    4x4 stride-2 transposed convolutions of ``reversed(conv_filters[:-1])`` and one to the channels.

    Args:
        data_shape: ``(H, W, C)``, H and W divisible by ``2 ** len(conv_filters)``.
        hidden_units, conv_filters: as the VAE's ``hidden_units`` and ``conv_filters``.
        activation, prior_scale, learn_prior_scale, posterior_init_scale, seed: as :class:`BayesianMLP`.
    """

    def __init__(self, data_shape, hidden_units=(), conv_filters=(32, 64), activation: str = "relu",
                 prior_scale: float = 1.0, learn_prior_scale: bool = True, posterior_init_scale: float = 1e-3,
                 seed: int | None = None, **kwargs):
        super().__init__(activation, prior_scale, learn_prior_scale, posterior_init_scale, seed, **kwargs)
        self.data_shape = tuple(int(d) for d in data_shape)
        self.hidden_units = tuple(int(u) for u in hidden_units)
        self.conv_filters = tuple(int(f) for f in conv_filters)
        factor = 2 ** len(self.conv_filters)
        if len(self.data_shape) != 3 or not self.conv_filters or self.data_shape[0] % factor or self.data_shape[1] % factor:
            raise ValueError(f"BayesianConvDecoder needs data_shape (H, W, C) with H and W divisible by "
                             f"2 ** len(conv_filters) = {factor} and at least one conv filter, got data_shape "
                             f"{self.data_shape}, conv_filters {self.conv_filters}.")
        h, w = self.data_shape[0] // factor, self.data_shape[1] // factor
        self.reshape_to = (h, w, self.conv_filters[-1])
        dense = [BayesianDense(u, activation, **self._options(), seed=self._seed(i), name=f"bayesian_dense_{i}")
                 for i, u in enumerate((*reversed(self.hidden_units), h * w * self.conv_filters[-1]))]
        filters = (*reversed(self.conv_filters[:-1]), self.data_shape[2])
        conv = [BayesianConv2DTranspose(f, 4, 2, "same", activation if i < len(filters) - 1 else None,
                                        **self._options(), seed=self._seed(len(dense) + i),
                                        name=f"bayesian_conv_transpose_{i}")
                for i, f in enumerate(filters)]
        self.reshape_after = len(dense) - 1
        self.bayesian_layers = dense + conv

    @property
    def stack(self) -> list:
        return self.bayesian_layers

    def build(self, input_shape):
        shape = (None, int(input_shape[-1]))
        for i, layer in enumerate(self.stack):
            layer.build(shape)
            shape = layer.output_shape_for(shape)
            if i == self.reshape_after:
                shape = (None, *self.reshape_to)
        self.built = True

    def get_config(self):
        return {**super().get_config(), "data_shape": list(self.data_shape), "hidden_units": list(self.hidden_units),
                "conv_filters": list(self.conv_filters)}
