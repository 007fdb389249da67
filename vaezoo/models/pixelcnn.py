"""A gated PixelCNN prior over VQ-VAE code maps.

p(c) = prod_{i,j} p(c_ij | c_<ij) over an h x w map of K-way codes, in raster order. Each block has
a vertical stack (sees the rows above) and a horizontal stack (sees the pixels to the left in the
current row), gated activations tanh(a) * sigmoid(b), and a residual connection on the horizontal
stack; together they have no blind spot (van den Oord et al. 2016). The first horizontal layer
excludes the current position (mask "A").

It trains with the base class's ``train_step`` on code maps produced by a trained VQ-VAE
(:func:`vaezoo.data.codes_dataset`); metrics: ``loss``, ``nll`` (nats per code map) and
``bits_per_dim`` (bits per code). ``sample(n)`` draws code maps position by position;
:meth:`vaezoo.VQVAE.sample` decodes them.

Example:

>>> prior = vaezoo.get("pixelcnn_prior", code_shape=vq.code_shape, num_codes=vq.num_codes)
>>> prior.compile(keras.optimizers.Adam(1e-3))
>>> prior.fit(vaezoo.data.codes_dataset(vq, images_ds), epochs=10)
>>> images = vq.sample(16, prior=prior, seed=0)

References:
    van den Oord, Kalchbrenner, Vinyals, Espeholt, Graves & Kavukcuoglu, "Conditional Image
    Generation with PixelCNN Decoders", NeurIPS 2016 (gated PixelCNN).
    van den Oord, Vinyals & Kavukcuoglu, "Neural Discrete Representation Learning", NeurIPS 2017.
"""

from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf

from vaezoo.models.base import BaseVAE
from vaezoo.registry import register_model

_register = keras.saving.register_keras_serializable(package="vaezoo")


@_register
class MaskedConv2D(keras.layers.Layer):
    """A 'same' convolution whose kernel is multiplied by a causal mask.

    Masks: ``"vertical"`` keeps kernel rows up to and including the centre row (all columns);
    ``"A"`` keeps the columns strictly left of the centre, ``"B"`` up to and including it (use a
    ``(1, k)`` kernel for the horizontal stack).
    """

    def __init__(self, filters: int, kernel_size: tuple[int, int], mask: str, **kwargs):
        super().__init__(**kwargs)
        if mask not in ("vertical", "A", "B"):
            raise ValueError(f"Unknown mask {mask!r}; valid choices: vertical, A, B.")
        self.filters = int(filters)
        self.kernel_size = tuple(int(k) for k in kernel_size)
        self.mask = mask

    def build(self, input_shape):
        kh, kw = self.kernel_size
        self.kernel = self.add_weight(name="kernel", shape=(kh, kw, input_shape[-1], self.filters),
                                      initializer="glorot_uniform")
        self.bias = self.add_weight(name="bias", shape=(self.filters,), initializer="zeros")
        m = np.ones((kh, kw, 1, 1), np.float32)
        if self.mask == "vertical":
            m[kh // 2 + 1 :] = 0.0
        else:
            m[:, kw // 2 + (1 if self.mask == "B" else 0) :] = 0.0
        self._mask = tf.constant(m)
        self.built = True

    def call(self, x):
        return tf.nn.conv2d(x, self.kernel * self._mask, strides=1, padding="SAME") + self.bias

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "kernel_size": list(self.kernel_size),
                "mask": self.mask}


@_register
class GatedPixelCNNBlock(keras.layers.Layer):
    """One gated block: ``(v, h) -> (v', h')`` with vertical and horizontal stacks."""

    def __init__(self, channels: int, kernel_size: int = 3, first: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.channels = int(channels)
        self.kernel_size = int(kernel_size)
        self.first = bool(first)
        c, k = self.channels, self.kernel_size
        self.v_conv = MaskedConv2D(2 * c, (k, k), "vertical", name="v_conv")
        self.h_conv = MaskedConv2D(2 * c, (1, k), "A" if first else "B", name="h_conv")
        self.v_to_h = keras.layers.Conv2D(2 * c, 1, name="v_to_h")
        self.h_out = keras.layers.Conv2D(c, 1, name="h_out")

    def build(self, input_shape):
        shape = tuple(input_shape[0])
        self.v_conv.build(shape)
        self.h_conv.build(shape)
        self.v_to_h.build((*shape[:-1], 2 * self.channels))
        self.h_out.build((*shape[:-1], self.channels))
        self.built = True

    @staticmethod
    def _gate(x):
        a, b = tf.split(x, 2, axis=-1)
        return tf.tanh(a) * tf.sigmoid(b)

    def call(self, inputs):
        v, h = inputs
        v_pre = self.v_conv(v)
        # Shift the vertical features down one row: position (i, j) then only sees rows < i.
        v_down = tf.pad(v_pre, [[0, 0], [1, 0], [0, 0], [0, 0]])[:, :-1]
        h_gated = self._gate(self.h_conv(h) + self.v_to_h(v_down))
        h_new = self.h_out(h_gated)
        return self._gate(v_pre), (h_new if self.first else h + h_new)

    def get_config(self):
        return {**super().get_config(), "channels": self.channels, "kernel_size": self.kernel_size,
                "first": self.first}


@_register
class PixelCNNPrior(BaseVAE):
    """Gated PixelCNN over ``code_shape`` maps of ``num_codes``-way codes.

    Args:
        code_shape: ``(h, w)`` of the code maps (a VQ-VAE's ``code_shape``).
        num_codes: K, the VQ-VAE's codebook size.
        channels: feature channels.
        num_blocks: gated blocks.
        kernel_size: odd kernel size of the masked convolutions.
        seed: sampling seed.
    """

    metric_names = ("nll", "bits_per_dim")
    input_kind = "codes"

    def __init__(
        self,
        code_shape: tuple[int, ...] = (7, 7),
        num_codes: int = 64,
        channels: int = 64,
        num_blocks: int = 6,
        kernel_size: int = 3,
        seed: int | None = None,
        **kwargs,
    ):
        if kernel_size % 2 == 0 or kernel_size < 3 or num_blocks < 1 or len(code_shape) != 2:
            raise ValueError(
                f"PixelCNNPrior needs an odd kernel_size >= 3, num_blocks >= 1 and code_shape (h, w); got "
                f"kernel_size={kernel_size}, num_blocks={num_blocks}, code_shape={tuple(code_shape)}."
            )
        super().__init__(data_shape=tuple(code_shape), seed=seed, **kwargs)
        self.code_shape = tuple(int(d) for d in code_shape)
        self.num_codes = int(num_codes)
        self.channels = int(channels)
        self.num_blocks = int(num_blocks)
        self.kernel_size = int(kernel_size)
        self.embedding = keras.layers.Embedding(self.num_codes, self.channels, name="embedding")
        self.blocks = [GatedPixelCNNBlock(self.channels, self.kernel_size, first=(i == 0), name=f"block_{i}")
                       for i in range(self.num_blocks)]
        self.head = keras.Sequential(
            [keras.Input((*self.code_shape, self.channels)), keras.layers.ReLU(),
             keras.layers.Conv2D(self.channels, 1, activation="relu"), keras.layers.Conv2D(self.num_codes, 1)],
            name="head",
        )
        self.build((None, *self.code_shape))

    def build(self, input_shape=None):
        shape = (None, *self.code_shape, self.channels)
        self.embedding.build((None, *self.code_shape))
        for block in self.blocks:
            block.build((shape, shape))
        self.built = True

    def check_inputs(self, codes):
        codes = tf.convert_to_tensor(codes)
        if not codes.dtype.is_integer:
            raise TypeError(f"{self.name} expects integer code maps, got dtype {codes.dtype.name}.")
        if tuple(codes.shape[1:]) != self.code_shape:
            raise ValueError(
                f"{self.name} expects code maps of shape (batch, {', '.join(map(str, self.code_shape))}), "
                f"got {tuple(codes.shape)}."
            )
        return tf.cast(codes, tf.int32)

    def call(self, codes, training=False):
        """Logits of p(c_ij | c_<ij), ``[B, h, w, K]``."""
        x = self.embedding(self.check_inputs(codes))
        v, h = x, x
        for block in self.blocks:
            v, h = block((v, h))
        return self.head(h, training=training)

    def compute_terms(self, codes, training=False, seed=None):
        codes = self.check_inputs(codes)
        logits = self(codes, training=training)
        nll = tf.reduce_sum(
            tf.nn.sparse_softmax_cross_entropy_with_logits(labels=codes, logits=logits), axis=[1, 2]
        )
        return {"nll": nll, "bits_per_dim": nll / (math.prod(self.code_shape) * math.log(2.0))}

    def objective(self, terms):
        return tf.reduce_mean(terms["nll"])

    def sample(self, n: int, seed=None):
        """``n`` code maps drawn position by position in raster order, int32 ``[n, h, w]``."""
        seed = self.next_seed(seed)
        h, w = self.code_shape
        codes = tf.zeros([int(n), h, w], tf.int32)
        for i in range(h):
            for j in range(w):
                logits = self(codes)[:, i, j]
                step_seed = tf.stack([seed[0], seed[1] + i * w + j])
                drawn = tf.random.stateless_categorical(logits, 1, step_seed, dtype=tf.int32)[:, 0]
                codes = tf.tensor_scatter_nd_update(
                    codes, tf.stack([tf.range(int(n)), tf.fill([int(n)], i), tf.fill([int(n)], j)], 1), drawn
                )
        return codes

    def get_config(self):
        config = super().get_config()
        config.pop("data_shape")
        return {**config, "code_shape": list(self.code_shape), "num_codes": self.num_codes,
                "channels": self.channels, "num_blocks": self.num_blocks, "kernel_size": self.kernel_size}


register_model(PixelCNNPrior, name="pixelcnn_prior")
