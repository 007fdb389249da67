"""Building blocks of normalizing flows as Keras 3 layers.

TFP 0.25's ``tfp.bijectors.AutoregressiveNetwork`` subclasses the Keras-2 layer class (``tf_keras``), so a
Keras 3 model neither tracks nor saves its weights. :class:`MADE` is the masked autoencoder of Germain et al.
(2015) written as a Keras 3 layer, to be handed to an autoregressive bijector (IAF, MAF) as its
``shift_and_log_scale_fn``.

Each input dimension i gets a degree d(i) in 1..D (its place in ``input_order``), each hidden unit k of layer l
a degree m_l(k) in 1..D-1, and the masks keep a connection only where information flows from lower to higher
degrees:

.. math::

    M^{(l)}_{jk} = [\\, m_l(k) \\ge m_{l-1}(j) \\,], \\qquad M^{out}_{ki} = [\\, d(i) > m_L(k) \\,],

so output i (its ``params`` numbers) depends only on the inputs of degree < d(i): the Jacobian of the outputs
in the inputs, ordered by degree, is strictly lower triangular, which makes the flow's log-determinant a sum
over the diagonal. An optional context (``context_dim``, e.g. the encoder's features h in IAF) feeds the first
hidden layer and the outputs unmasked, so every output (the first one too) is a function of it.

Example:

>>> import tensorflow as tf
>>> from vaezoo import flows
>>> made = flows.MADE(params=2, hidden_units=(32, 32), context_dim=8)
>>> out = made(tf.zeros([5, 4]), context=tf.zeros([5, 8]))       # [5, 4, 2]: e.g. shift and log-scale

Reference:
    Germain, Gregor, Murray & Larochelle, "MADE: Masked Autoencoder for Distribution Estimation", ICML 2015.
    Kingma et al., "Improved Variational Inference with Inverse Autoregressive Flow", NeurIPS 2016.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

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
