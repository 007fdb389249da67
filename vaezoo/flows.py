"""Normalizing flows: MADE, the planar, radial and IAF posteriors, the MAF prior (Keras 3 layers, TFP bijectors).

Three kinds of building block:

* :class:`MADE`, the masked autoencoder of Germain et al. (2015) as a Keras 3 layer. TFP 0.25's
  ``tfp.bijectors.AutoregressiveNetwork`` subclasses the Keras-2 layer class (``tf_keras``), so a Keras 3 model
  neither tracks nor saves its weights; this one is handed to the autoregressive bijectors instead.
* bijectors (``tfp.bijectors.Bijector`` subclasses): :class:`PlanarBijector`, :class:`RadialBijector`
  (Rezende & Mohamed 2015) and :class:`GatedAutoregressiveBijector` (one IAF step, Kingma et al. 2016), each
  with its forward map, its exact inverse and its log-determinant, and a fused :meth:`forward_and_log_det`.
* registered distribution layers: the posteriors ``planar``, ``radial`` and ``iaf`` (config ``posterior``) and
  the prior ``flow`` (a MAF, Papamakarios et al. 2017; config ``prior``).

A flow posterior is q_K(z_K|x) with z_0 ~ N(mu(x), diag sigma^2(x)) and z_k = f_k(z_{k-1}):

.. math::

    \\log q_K(z_K|x) = \\log q_0(z_0|x) - \\sum_{k=1}^K \\log \\left|\\det \\frac{\\partial f_k}{\\partial z_{k-1}}\\right|,

accumulated on the way by :meth:`FlowPosterior.sample_and_log_prob` (no inverse needed; this is what the bounds
and the importance-sampled NLL use). ``distribution()`` is the same q as a ``tfd.TransformedDistribution``, whose
``log_prob`` of an arbitrary z runs the inverses. No (flow, prior) pair has a closed-form KL: the models use the
Monte-Carlo KL, log q(z|x) - log p(z) at the sampled z (:func:`vaezoo.layers.kl_divergence`).

MADE masks: each input dimension i gets a degree d(i) in 1..D (its place in ``input_order``), each hidden unit k
of layer l a degree m_l(k) in 1..D-1, and

.. math::

    M^{(l)}_{jk} = [\\, m_l(k) \\ge m_{l-1}(j) \\,], \\qquad M^{out}_{ki} = [\\, d(i) > m_L(k) \\,],

so output i depends only on the inputs of degree < d(i): the Jacobian, ordered by degree, is strictly lower
triangular. An optional context (``context_dim``, IAF's encoder features h) feeds the first hidden layer and the
outputs unmasked.

Example:

>>> import vaezoo
>>> model = vaezoo.get("vae", posterior="iaf", num_flows=2, flow_hidden_units=[64, 64])
>>> model = vaezoo.get("vae", posterior="planar", num_flows=8, prior="flow", prior_flows=2)

References:
    Germain, Gregor, Murray & Larochelle, "MADE: Masked Autoencoder for Distribution Estimation", ICML 2015.
    Rezende & Mohamed, "Variational Inference with Normalizing Flows", ICML 2015 (planar and radial flows,
    appendix A: invertibility).
    Kingma, Salimans, Jozefowicz, Chen, Sutskever & Welling, "Improved Variational Inference with Inverse
    Autoregressive Flow", NeurIPS 2016 (IAF, Algorithm 1 and its numerically stable gated update).
    Papamakarios, Pavlakou & Murray, "Masked Autoregressive Flow for Density Estimation", NeurIPS 2017.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from vaezoo import config as cfg
from vaezoo import layers as dl

tfb = tfp.bijectors
tfd = tfp.distributions

ORDERS = ("left-to-right", "right-to-left")


def input_degrees(dim: int, order) -> np.ndarray:
    """The degree (1..dim) of each input: ``order`` is ``"left-to-right"``, ``"right-to-left"`` or a
    permutation of 1..dim."""
    if isinstance(order, str):
        if order not in ORDERS:
            raise ValueError(f"Unknown input_order {order!r}; valid choices: {', '.join(ORDERS)} or a permutation "
                             f"of 1..{dim}.")
        degrees = np.arange(1, dim + 1)
        return degrees if order == "left-to-right" else degrees[::-1].copy()
    degrees = np.asarray(order, dtype=int)
    if sorted(degrees.tolist()) != list(range(1, dim + 1)):
        raise ValueError(f"input_order must be a permutation of 1..{dim}, got {list(order)}.")
    return degrees


def hidden_degrees(units: int, dim: int) -> np.ndarray:
    """Degrees 1..dim-1 spread evenly over ``units`` hidden units (all 1 when dim is 1)."""
    return np.arange(units) % max(dim - 1, 1) + 1


@keras.saving.register_keras_serializable(package="vaezoo")
class MADE(keras.layers.Layer):
    """Masked autoencoder: ``x [..., D]`` (and a context ``[..., C]``) -> ``[..., D, params]``, output i a
    function of the inputs of lower degree only.

    Args:
        params: numbers per input dimension (2 for an affine flow's shift and log-scale).
        hidden_units: widths of the masked hidden layers (at least one).
        activation: hidden activation.
        input_order: ``"left-to-right"``, ``"right-to-left"`` or a permutation of 1..D (the degrees).
        context_dim: size of the unmasked context input (0: none).
        seed: seed of the kernel initialisers.
    """

    def __init__(self, params: int = 2, hidden_units=(64,), activation: str = "relu", input_order="left-to-right",
                 context_dim: int = 0, seed: int | None = None, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.params = int(params)
        self.hidden_units = tuple(int(u) for u in hidden_units)
        if self.params < 1 or not self.hidden_units or min(self.hidden_units) < 1:
            raise ValueError(f"MADE needs params >= 1 and at least one hidden layer of >= 1 unit, got params="
                             f"{params!r}, hidden_units={list(hidden_units)!r}.")
        self.activation = activation
        self._activation = keras.activations.get(activation)
        self.input_order = input_order if isinstance(input_order, str) else [int(d) for d in input_order]
        self.context_dim = int(context_dim)
        self.seed = seed

    def build(self, input_shape):
        dim = int(input_shape[-1])
        self.dim = dim
        degrees = input_degrees(dim, self.input_order)
        self.degrees = degrees
        masks, self.kernels, self.biases = [], [], []
        previous, width = degrees, dim
        for i, units in enumerate(self.hidden_units):
            current = hidden_degrees(units, dim)
            masks.append((current[None, :] >= previous[:, None]).astype("float32"))
            self.kernels.append(self.add_weight(name=f"kernel_{i}", shape=(width, units),
                                                initializer=self._initializer(i)))
            self.biases.append(self.add_weight(name=f"bias_{i}", shape=(units,), initializer="zeros"))
            previous, width = current, units
        out_mask = (degrees[None, :] > previous[:, None]).astype("float32")  # [units, D]
        masks.append(np.repeat(out_mask, self.params, axis=1))  # columns (i, p) in row-major order
        self.kernels.append(self.add_weight(name="kernel_out", shape=(width, dim * self.params),
                                            initializer=self._initializer(len(self.hidden_units))))
        self.biases.append(self.add_weight(name="bias_out", shape=(dim * self.params,), initializer="zeros"))
        self.masks = [tf.constant(m) for m in masks]
        self.context_kernel = self.context_out_kernel = None
        if self.context_dim:  # into the first hidden layer and straight to the outputs (so output 1 sees it too)
            self.context_kernel = self.add_weight(name="context_kernel", shape=(self.context_dim, self.hidden_units[0]),
                                                  initializer=self._initializer(-1))
            self.context_out_kernel = self.add_weight(name="context_out_kernel",
                                                      shape=(self.context_dim, dim * self.params),
                                                      initializer=self._initializer(-2))
        self.built = True

    def _initializer(self, i):
        return keras.initializers.GlorotUniform(seed=None if self.seed is None else self.seed + i + 1)

    def call(self, inputs, context=None):
        if (context is None) != (self.context_kernel is None):
            raise ValueError(f"This MADE was built with context_dim={self.context_dim}: pass a context "
                             f"[..., {self.context_dim}] exactly when context_dim > 0.")
        h = tf.convert_to_tensor(inputs, tf.float32)
        for i in range(len(self.hidden_units)):
            pre = tf.matmul(h, self.kernels[i] * self.masks[i]) + self.biases[i]
            if i == 0 and context is not None:
                pre += tf.matmul(tf.convert_to_tensor(context, tf.float32), self.context_kernel)
            h = self._activation(pre)
        out = tf.matmul(h, self.kernels[-1] * self.masks[-1]) + self.biases[-1]
        if context is not None:
            out += tf.matmul(tf.convert_to_tensor(context, tf.float32), self.context_out_kernel)
        return tf.reshape(out, tf.concat([tf.shape(out)[:-1], [self.dim, self.params]], 0))

    def get_config(self):
        return {**super().get_config(), "params": self.params, "hidden_units": list(self.hidden_units),
                "activation": self.activation, "input_order": self.input_order, "context_dim": self.context_dim,
                "seed": self.seed}


# --------------------------------------------------------------------------------------------
# Bijectors
# --------------------------------------------------------------------------------------------


class _FlowBijector(tfb.Bijector):
    """A bijector on vectors (event rank 1) with a fused forward pass: :meth:`forward_and_log_det` gives
    f(x) and log|det df/dx| together (one network evaluation), which sampling uses; TFP's ``forward``,
    ``inverse`` and log-determinants come from it and from :meth:`_inverse`."""

    def __init__(self, parameters, name):
        super().__init__(forward_min_event_ndims=1, validate_args=False, parameters=parameters, name=name)

    def forward_and_log_det(self, x):
        raise NotImplementedError

    def _forward(self, x):
        return self.forward_and_log_det(x)[0]

    def _forward_log_det_jacobian(self, x):
        return self.forward_and_log_det(x)[1]

    def _inverse_log_det_jacobian(self, y):
        return -self.forward_and_log_det(self._inverse(y))[1]


def planar_u_hat(u, w):
    """Rezende & Mohamed's constraint (appendix A.1): u_hat = u + (m(w.u) - w.u) w / |w|^2, m(a) = -1 + softplus(a),
    so that w.u_hat = m(w.u) > -1 and the planar map is invertible. m is raised by ``PLANAR_MARGIN`` (1e-3):
    for w.u << 0 softplus underflows and float32 rounding of the projection would land w.u_hat on (or just
    below) -1, where the map folds (a zero derivative along w, log|det| = -inf)."""
    wu = tf.reduce_sum(w * u, axis=-1, keepdims=True)
    m = tf.nn.softplus(wu) - 1.0 + PLANAR_MARGIN
    return u + (m - wu) * w / (tf.reduce_sum(w * w, axis=-1, keepdims=True) + 1e-8)


PLANAR_MARGIN = 1e-3


class PlanarBijector(_FlowBijector):
    """f(z) = z + u_hat tanh(w.z + b), log|det| = log|1 + u_hat.psi(z)|, psi(z) = (1 - tanh^2(w.z + b)) w.

    ``u``, ``w`` ``[..., d]`` and ``b`` ``[...]`` may carry batch dimensions (an amortised flow). u is
    replaced by :func:`planar_u_hat`. The inverse solves the monotone scalar equation a + (w.u_hat) tanh(a) =
    w.y + b for a = w.z + b by bisection (``inverse_iterations`` halvings of an interval of width 2|w.u_hat|),
    then z = y - u_hat tanh(a).
    """

    def __init__(self, u, w, b, inverse_iterations: int = 60, name="planar"):
        parameters = dict(locals())
        self.u_hat = planar_u_hat(u, w)
        self.w, self.b = w, b
        self.inverse_iterations = int(inverse_iterations)
        super().__init__(parameters, name)

    def forward_and_log_det(self, x):
        a = tf.reduce_sum(self.w * x, axis=-1) + self.b
        t = tf.tanh(a)
        y = x + self.u_hat * t[..., None]
        psi_u = (1.0 - t**2) * tf.reduce_sum(self.w * self.u_hat, axis=-1)
        return y, tf.math.log(tf.abs(1.0 + psi_u) + 1e-12)

    def _inverse(self, y):
        c = tf.reduce_sum(self.w * self.u_hat, axis=-1)  # > -1
        target = tf.reduce_sum(self.w * y, axis=-1) + self.b
        lo, hi = target - tf.abs(c) - 1e-3, target + tf.abs(c) + 1e-3  # |c tanh(a)| <= |c|

        def body(i, lo, hi):
            mid = 0.5 * (lo + hi)
            above = mid + c * tf.tanh(mid) > target  # g(a) = a + c tanh(a) is increasing
            return i + 1, tf.where(above, lo, mid), tf.where(above, mid, hi)

        _, lo, hi = tf.while_loop(lambda i, *_: i < self.inverse_iterations, body, (0, lo, hi))
        return y - self.u_hat * tf.tanh(0.5 * (lo + hi))[..., None]


class RadialBijector(_FlowBijector):
    """f(z) = z + beta h(alpha, r) (z - z0), r = |z - z0|, h = 1 / (alpha + r) (Rezende & Mohamed 2015, eq. 14).

    ``alpha = softplus(raw_alpha) > 0`` and ``beta = -alpha + softplus(raw_beta) >= -alpha`` (appendix A.2: then f is
    invertible), log|det| = (d - 1) log(1 + beta h) + log(1 + beta h + beta h' r), h' = -1/(alpha + r)^2. The inverse
    is closed-form: |y - z0| = r (1 + beta / (alpha + r)) is a quadratic in r.
    """

    def __init__(self, z0, raw_alpha, raw_beta, name="radial"):
        parameters = dict(locals())
        self.z0 = z0
        self.alpha = tf.nn.softplus(raw_alpha)
        self.beta = -self.alpha + tf.nn.softplus(raw_beta)
        super().__init__(parameters, name)

    def forward_and_log_det(self, x):
        diff = x - self.z0
        r = tf.norm(diff, axis=-1)
        h = 1.0 / (self.alpha + r)
        bh = self.beta * h
        d = tf.cast(tf.shape(x)[-1], x.dtype)
        log_det = (d - 1.0) * tf.math.log1p(bh) + tf.math.log1p(bh - self.beta * r * h**2)
        return x + bh[..., None] * diff, log_det

    def _inverse(self, y):
        diff = y - self.z0
        ry = tf.norm(diff, axis=-1)
        s = self.alpha + self.beta - ry
        r = 0.5 * (-s + tf.sqrt(s**2 + 4.0 * self.alpha * ry))
        return self.z0 + diff / (1.0 + self.beta / (self.alpha + r))[..., None]


class GatedAutoregressiveBijector(_FlowBijector):
    """One IAF step, the numerically stable gated update of Kingma et al. 2016 (Algorithm 1):

    .. math:: [m, s] = \\mathrm{MADE}(z, h), \\quad \\sigma = \\mathrm{sigmoid}(s + b_f), \\quad
              z' = \\sigma \\odot z + (1 - \\sigma) \\odot m, \\quad \\log|\\det| = \\sum_i \\log \\sigma_i

    m_i and s_i depend on the z_j of lower degree only, so the Jacobian is triangular (in the MADE's order) with
    diagonal sigma. ``forget_bias`` b_f (+1) starts sigma near 0.73, the step near the identity. The forward map
    (sampling) is one MADE pass; the inverse (``log_prob`` of a given z) takes D passes, one per dimension in degree
    order.

    Args:
        made: a :class:`MADE` with ``params=2`` (its context size matching ``context``).
        context: the encoder's context h ``[..., C]`` or None.
    """

    def __init__(self, made, context=None, forget_bias: float = 1.0, name="iaf_step"):
        parameters = dict(locals())
        self.made, self.context, self.forget_bias = made, context, float(forget_bias)
        super().__init__(parameters, name)

    def _gates(self, x):
        out = self.made(x, context=self.context)
        return out[..., 0], tf.sigmoid(out[..., 1] + self.forget_bias), tf.math.log_sigmoid(out[..., 1] + self.forget_bias)

    def forward_and_log_det(self, x):
        m, sigma, log_sigma = self._gates(x)
        return sigma * x + (1.0 - sigma) * m, tf.reduce_sum(log_sigma, axis=-1)

    def _inverse(self, y):
        # x_i = (y_i - (1 - sigma_i) m_i) / sigma_i with (m_i, sigma_i) functions of x_<i: after pass t the t
        # lowest-degree coordinates are exact, so D passes give the inverse.
        x = tf.zeros_like(y)
        for _ in range(int(y.shape[-1])):
            m, sigma, _ = self._gates(x)
            x = (y - (1.0 - sigma) * m) / sigma
        return x


# --------------------------------------------------------------------------------------------
# Flow posteriors
# --------------------------------------------------------------------------------------------


class FlowPosterior(dl.Posterior):
    """q(z|x): a diagonal Gaussian q_0(z_0|x) pushed through ``num_flows`` bijectors (see the module docstring).

    A subclass defines :meth:`flow_parameters` (features -> the extra tensors that parameterise the flow, which
    ``encode`` returns after the mean and log-variance) and :meth:`steps` (those tensors -> the bijectors, first
    applied first). ``point`` is f(mu): the flow applied to the base mean (the flow's mean has no closed form).

    Args:
        latent_dim: size of z.
        num_flows: number of flow steps K (>= 1).
    """

    parameter_names = ("mean", "log_variance", "flow")
    config_keys = {"num_flows": ("num_flows", cfg.AT_LEAST_1)}

    def __init__(self, latent_dim: int, num_flows: int = 4, **kwargs):
        super().__init__(latent_dim, **kwargs)
        if int(num_flows) < 1:
            raise cfg.ConfigError(f"num_flows must be >= 1 for the {type(self).__name__}, got {num_flows!r}.")
        self.num_flows = int(num_flows)
        self.projection = keras.layers.Dense(2 * self.latent_dim, name="projection", dtype=self.dtype_policy)

    def build(self, input_shape):
        self.projection.build(input_shape)
        self.build_flow(input_shape)
        self.built = True

    def build_flow(self, input_shape):
        raise NotImplementedError

    def flow_parameters(self, features) -> tf.Tensor:
        raise NotImplementedError

    def steps(self, flow) -> list:
        raise NotImplementedError

    def parameters(self, features):
        h = self.projection(features)
        return h[..., : self.latent_dim], h[..., self.latent_dim :], self.flow_parameters(features)

    def base(self, mean, log_var):
        return tfd.Independent(tfd.Normal(loc=mean, scale=tf.exp(0.5 * log_var)), reinterpreted_batch_ndims=1)

    def distribution(self, mean, log_var, flow):
        steps = self.steps(flow)
        return tfd.TransformedDistribution(self.base(mean, log_var), tfb.Chain(steps[::-1]))  # Chain applies last first

    def sample_and_log_prob(self, params, noise):
        mean, log_var, flow = params
        z = mean + tf.exp(0.5 * log_var) * noise
        log_q = self.base(mean, log_var).log_prob(z)
        for step in self.steps(flow):
            z, log_det = step.forward_and_log_det(z)
            log_q -= log_det
        return z, log_q

    def point(self, params):
        z = params[0]
        for step in self.steps(params[2]):
            z = step.forward_and_log_det(z)[0]
        return z

    def get_config(self):
        return {**super().get_config(), "num_flows": self.num_flows}


@keras.saving.register_keras_serializable(package="vaezoo")
@dl.register_posterior("planar")
class PlanarPosterior(FlowPosterior):
    """Amortised planar flows (Rezende & Mohamed 2015, eq. 10): the encoder gives each example its own
    u_k, w_k (``[d]``) and b_k for k = 1..``num_flows``; ``encode`` returns them as ``flow``
    ``[B, num_flows, 2 d + 1]``. Invertible by the u-hat constraint (:func:`planar_u_hat`)."""

    def build_flow(self, input_shape):
        self.flow_projection = keras.layers.Dense(self.num_flows * (2 * self.latent_dim + 1), name="flow_projection",
                                                  dtype=self.dtype_policy)
        self.flow_projection.build(input_shape)

    def flow_parameters(self, features):
        out = self.flow_projection(features)
        return tf.reshape(out, tf.concat([tf.shape(out)[:-1], [self.num_flows, 2 * self.latent_dim + 1]], 0))

    def steps(self, flow):
        d = self.latent_dim
        return [PlanarBijector(flow[..., k, :d], flow[..., k, d:2 * d], flow[..., k, 2 * d], name=f"planar_{k}")
                for k in range(self.num_flows)]


@keras.saving.register_keras_serializable(package="vaezoo")
@dl.register_posterior("radial")
class RadialPosterior(FlowPosterior):
    """Amortised radial flows (Rezende & Mohamed 2015, eq. 14): per example and step a centre z0_k ``[d]`` and
    raw alpha_k, beta_k (constrained as :class:`RadialBijector` says); ``flow`` is ``[B, num_flows, d + 2]``."""

    def build_flow(self, input_shape):
        self.flow_projection = keras.layers.Dense(self.num_flows * (self.latent_dim + 2), name="flow_projection",
                                                  dtype=self.dtype_policy)
        self.flow_projection.build(input_shape)

    def flow_parameters(self, features):
        out = self.flow_projection(features)
        return tf.reshape(out, tf.concat([tf.shape(out)[:-1], [self.num_flows, self.latent_dim + 2]], 0))

    def steps(self, flow):
        d = self.latent_dim
        return [RadialBijector(flow[..., k, :d], flow[..., k, d], flow[..., k, d + 1], name=f"radial_{k}")
                for k in range(self.num_flows)]


@keras.saving.register_keras_serializable(package="vaezoo")
@dl.register_posterior("iaf")
class IAFPosterior(FlowPosterior):
    """Inverse autoregressive flow (Kingma et al. 2016): ``num_flows`` gated autoregressive steps
    (:class:`GatedAutoregressiveBijector`), each its own :class:`MADE` with ``flow_hidden_units`` (ELU, as the
    paper's), conditioned on a context h = a linear map of the encoder's features (``encode`` returns it as
    ``flow``, ``[B, flow_hidden_units[0]]``). The order of z is reversed between steps (the MADEs alternate
    left-to-right and right-to-left degrees: the permutation, without copying z), so every coordinate depends
    on every other after two steps.

    Args:
        latent_dim: size of z.
        num_flows: number of IAF steps.
        flow_hidden_units: widths of each MADE's hidden layers.
        seed: seed of the MADEs' initialisers.
    """

    config_keys = {"num_flows": ("num_flows", cfg.AT_LEAST_1), "flow_hidden_units": ("hidden_units", cfg.AT_LEAST_1),
                   "seed": ("seed", None)}

    def __init__(self, latent_dim: int, num_flows: int = 2, hidden_units=(320, 320), seed=None, **kwargs):
        super().__init__(latent_dim, num_flows, **kwargs)
        self.hidden_units = tuple(int(u) for u in hidden_units)
        self.seed = seed
        self.context_projection = keras.layers.Dense(self.hidden_units[0], name="context", dtype=self.dtype_policy)
        self.mades = [MADE(2, self.hidden_units, activation="elu", input_order=ORDERS[k % 2],
                           context_dim=self.hidden_units[0], seed=None if seed is None else seed + 100 * k,
                           name=f"made_{k}") for k in range(self.num_flows)]

    def build_flow(self, input_shape):
        self.context_projection.build(input_shape)
        for made in self.mades:
            made.build((None, self.latent_dim))

    def flow_parameters(self, features):
        return self.context_projection(features)

    def steps(self, flow):
        return [GatedAutoregressiveBijector(made, flow, name=f"iaf_{k}") for k, made in enumerate(self.mades)]

    def get_config(self):
        return {**super().get_config(), "hidden_units": list(self.hidden_units), "seed": self.seed}


# --------------------------------------------------------------------------------------------
# Flow prior
# --------------------------------------------------------------------------------------------


@keras.saving.register_keras_serializable(package="vaezoo")
@dl.register_prior("flow")
class MAFPrior(dl.Prior):
    """p(z): a masked autoregressive flow over N(0, I) (Papamakarios et al. 2017), ``prior_flows`` steps of
    ``tfp.bijectors.MaskedAutoregressiveFlow`` driven by Keras 3 :class:`MADE` layers (alternating orders).

    Each step maps u -> z with z_i = u_i exp(s_i(z_<i)) + m_i(z_<i): ``log_prob`` runs the inverse, one MADE pass
    per step; sampling (``from_noise``) runs the forward direction, D passes per step, unrolled (``unroll_loop``,
    the latent size is static), so the exported ``sample`` signatures are loop-free graphs. The log-scale is
    soft-clipped to (-``scale_limit``, ``scale_limit``) by a scaled tanh, which keeps a fresh flow from overflowing.

    Args:
        latent_dim: size of z.
        num_flows: MAF steps.
        hidden_units: widths of each MADE's hidden layers.
        seed: seed of the MADEs' initialisers.
    """

    config_keys = {"prior_flows": ("num_flows", cfg.AT_LEAST_1), "flow_hidden_units": ("hidden_units", cfg.AT_LEAST_1),
                   "seed": ("seed", None)}
    scale_limit = 5.0

    def __init__(self, latent_dim: int, num_flows: int = 2, hidden_units=(320, 320), seed=None, **kwargs):
        super().__init__(latent_dim, **kwargs)
        if int(num_flows) < 1:
            raise cfg.ConfigError(f"prior_flows must be >= 1 for the flow prior, got {num_flows!r}.")
        self.num_flows = int(num_flows)
        self.hidden_units = tuple(int(u) for u in hidden_units)
        self.seed = seed
        self.mades = [MADE(2, self.hidden_units, activation="elu", input_order=ORDERS[k % 2],
                           seed=None if seed is None else seed + 100 * k + 7, name=f"made_{k}")
                      for k in range(self.num_flows)]

    def build(self, input_shape=None):
        for made in self.mades:
            made.build((None, self.latent_dim))
        self.built = True

    def _shift_and_log_scale(self, made):
        def fn(x):
            out = made(x)
            return out[..., 0], self.scale_limit * tf.tanh(out[..., 1] / self.scale_limit)

        return fn

    def bijector(self):
        """u -> z, the steps composed (the first MADE applied first)."""
        steps = [tfb.MaskedAutoregressiveFlow(shift_and_log_scale_fn=self._shift_and_log_scale(made), unroll_loop=True,
                                              name=f"maf_{k}") for k, made in enumerate(self.mades)]
        return tfb.Chain(steps[::-1])

    def call(self, inputs=None):
        zeros = tf.zeros([self.latent_dim])
        base = tfd.Independent(tfd.Normal(loc=zeros, scale=tf.ones_like(zeros)), reinterpreted_batch_ndims=1)
        return tfd.TransformedDistribution(base, self.bijector())

    def from_noise(self, noise):
        return self.bijector().forward(tf.convert_to_tensor(noise, tf.float32))

    def get_config(self):
        return {**super().get_config(), "num_flows": self.num_flows, "hidden_units": list(self.hidden_units),
                "seed": self.seed}
