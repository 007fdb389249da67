"""Gated PixelCNN priors over VQ-VAE code maps: one level (VQ-VAE), two levels (VQ-VAE-2).

p(c) = prod_{i,j} p(c_ij | c_<ij) over an h x w map of K-way codes, in raster order. Each block has
a vertical stack (sees the rows above) and a horizontal stack (sees the pixels to the left in the
current row), gated activations tanh(a) * sigmoid(b), and a residual connection on the horizontal
stack; together they have no blind spot (van den Oord et al. 2016). The first horizontal layer
excludes the current position (mask "A"). A conditional network adds features of a conditioning
code map c to the gates of every block's horizontal stack (the paper's conditional gated PixelCNN):

.. math:: y = \\tanh(W_f * x + V_f c) \\odot \\sigma(W_g * x + V_g c).

The condition is given in full at every position, so it needs no causal path through the vertical
stack (whose only job is to carry context from the rows above).

:class:`PixelCNNPrior` models the single code map of ``vq_vae``. :class:`HierarchicalPixelCNNPrior`
models VQ-VAE-2's two levels as p(c_top) p(c_bottom | c_top): a PixelCNN over the top codes and a
second one over the bottom codes conditioned on the (upsampled) top codes, as in Razavi et al.
Both train with the base class's ``train_step`` on code maps produced by a trained VQ-VAE
(:func:`vaezoo.data.codes_dataset`); metrics: ``loss``, ``nll`` (nats per example) and
``bits_per_dim`` (bits per code). ``sample(n)`` draws codes position by position; the VQ-VAE's
``sample(n, prior=prior)`` decodes them.

Example:

>>> prior = vaezoo.get("pixelcnn_prior", code_shape=vq.code_shape, num_codes=vq.num_codes)
>>> prior.compile(keras.optimizers.Adam(1e-3))
>>> prior.fit(vaezoo.data.codes_dataset(vq, images_ds), epochs=10)
>>> images = vq.sample(16, prior=prior, seed=0)
>>> prior2 = vaezoo.get("hierarchical_pixelcnn_prior", **vq2.prior_config())   # for vq_vae2
>>> prior2.fit(vaezoo.data.codes_dataset(vq2, images_ds))   # inputs {"top": ..., "bottom": ...}

References:
    van den Oord, Kalchbrenner, Vinyals, Espeholt, Graves & Kavukcuoglu, "Conditional Image
    Generation with PixelCNN Decoders", NeurIPS 2016 (gated and conditional PixelCNN).
    van den Oord, Vinyals & Kavukcuoglu, "Neural Discrete Representation Learning", NeurIPS 2017.
    Razavi, van den Oord & Vinyals, "Generating Diverse High-Fidelity Images with VQ-VAE-2",
    NeurIPS 2019 (hierarchical prior).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import keras
import numpy as np
import tensorflow as tf

from vaezoo import config as cfg
from vaezoo.layers import categorical_from_uniform
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
        dtype = self.compute_dtype  # float16/bfloat16 under a mixed-precision policy
        kernel = tf.cast(self.kernel, dtype) * tf.cast(self._mask, dtype)
        return tf.nn.conv2d(x, kernel, strides=1, padding="SAME") + tf.cast(self.bias, dtype)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "kernel_size": list(self.kernel_size),
                "mask": self.mask}


@_register
class GatedPixelCNNBlock(keras.layers.Layer):
    """One gated block: ``(v, h[, condition]) -> (v', h')`` with vertical and horizontal stacks.

    With ``conditional=True`` the block takes a third input, features of the conditioning
    information at the same resolution, added (through a 1x1 convolution) to the horizontal gates.
    """

    def __init__(self, channels: int, kernel_size: int = 3, first: bool = False, conditional: bool = False,
                 **kwargs):
        super().__init__(**kwargs)
        self.channels = int(channels)
        self.kernel_size = int(kernel_size)
        self.first = bool(first)
        self.conditional = bool(conditional)
        c, k = self.channels, self.kernel_size
        self.v_conv = MaskedConv2D(2 * c, (k, k), "vertical", name="v_conv")
        self.h_conv = MaskedConv2D(2 * c, (1, k), "A" if first else "B", name="h_conv")
        self.v_to_h = keras.layers.Conv2D(2 * c, 1, name="v_to_h")
        self.h_out = keras.layers.Conv2D(c, 1, name="h_out")
        if self.conditional:
            self.cond_to_h = keras.layers.Conv2D(2 * c, 1, name="cond_to_h")

    def build(self, input_shape):
        shape = tuple(input_shape[0])
        self.v_conv.build(shape)
        self.h_conv.build(shape)
        self.v_to_h.build((*shape[:-1], 2 * self.channels))
        self.h_out.build((*shape[:-1], self.channels))
        if self.conditional:
            self.cond_to_h.build(tuple(input_shape[2]))
        self.built = True

    @staticmethod
    def _gate(x):
        a, b = tf.split(x, 2, axis=-1)
        return tf.tanh(a) * tf.sigmoid(b)

    def call(self, inputs):
        v, h = inputs[0], inputs[1]
        v_pre = self.v_conv(v)
        # Shift the vertical features down one row: position (i, j) then only sees rows < i.
        v_down = tf.pad(v_pre, [[0, 0], [1, 0], [0, 0], [0, 0]])[:, :-1]
        h_pre = self.h_conv(h) + self.v_to_h(v_down)
        if self.conditional:  # the condition is given, not predicted: every position may see all of it
            h_pre = h_pre + self.cond_to_h(inputs[2])
        h_new = self.h_out(self._gate(h_pre))
        return self._gate(v_pre), (h_new if self.first else h + h_new)

    def get_config(self):
        return {**super().get_config(), "channels": self.channels, "kernel_size": self.kernel_size,
                "first": self.first, "conditional": self.conditional}


@_register
class GatedPixelCNN(keras.layers.Layer):
    """Logits of p(c_ij | c_<ij [, condition]) for ``code_shape`` maps of ``num_codes``-way codes.

    Args:
        code_shape: ``(h, w)`` of the modelled code maps.
        num_codes: K.
        channels: feature channels.
        num_blocks: gated blocks.
        kernel_size: odd kernel size of the masked convolutions.
        condition_shape: ``(h_c, w_c)`` of a conditioning code map (None: unconditional); it must
            divide ``code_shape``: the condition is embedded, convolved and upsampled to it.
        condition_codes: K of the conditioning codes (default ``num_codes``).
    """

    def __init__(self, code_shape, num_codes: int, channels: int = 64, num_blocks: int = 6, kernel_size: int = 3,
                 condition_shape=None, condition_codes: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.code_shape = tuple(int(d) for d in code_shape)
        if kernel_size % 2 == 0 or kernel_size < 3 or num_blocks < 1 or len(self.code_shape) != 2:
            raise ValueError(
                f"A gated PixelCNN needs an odd kernel_size >= 3, num_blocks >= 1 and code_shape (h, w); got "
                f"kernel_size={kernel_size}, num_blocks={num_blocks}, code_shape={self.code_shape}."
            )
        self.num_codes = int(num_codes)
        self.channels = int(channels)
        self.num_blocks = int(num_blocks)
        self.kernel_size = int(kernel_size)
        self.condition_shape = None if condition_shape is None else tuple(int(d) for d in condition_shape)
        self.condition_codes = None if self.condition_shape is None else int(condition_codes or num_codes)
        c = self.channels
        self.embedding = keras.layers.Embedding(self.num_codes, c, name="embedding")
        self.blocks = [GatedPixelCNNBlock(c, self.kernel_size, first=(i == 0), conditional=self.conditional,
                                          name=f"block_{i}") for i in range(self.num_blocks)]
        self.head = keras.Sequential(
            [keras.Input((*self.code_shape, c)), keras.layers.ReLU(), keras.layers.Conv2D(c, 1, activation="relu"),
             keras.layers.Conv2D(self.num_codes, 1)],
            name="head",
        )
        if self.conditional:
            factor = [a // b if b and a % b == 0 else 0 for a, b in zip(self.code_shape, self.condition_shape)]
            if len(self.condition_shape) != 2 or 0 in factor:
                raise ValueError(
                    f"condition_shape {self.condition_shape} must be (h, w) dividing code_shape {self.code_shape}."
                )
            self.condition_net = keras.Sequential(
                [keras.Input(self.condition_shape, dtype="int32"),
                 keras.layers.Embedding(self.condition_codes, c),
                 keras.layers.Conv2D(c, 3, padding="same", activation="relu"),
                 keras.layers.UpSampling2D(tuple(factor)),
                 keras.layers.Conv2D(c, 3, padding="same", activation="relu"),
                 keras.layers.Conv2D(c, 3, padding="same", activation="relu")],
                name="condition_net",
            )

    @property
    def conditional(self) -> bool:
        return self.condition_shape is not None

    def build(self, input_shape=None):
        shape = (None, *self.code_shape, self.channels)
        self.embedding.build((None, *self.code_shape))
        for block in self.blocks:
            block.build((shape, shape, shape) if self.conditional else (shape, shape))
        self.built = True

    @property
    def reach(self) -> int:
        """Rows above position (i, j) that its logits depend on: each block's vertical stack looks ``k // 2`` rows
        up and feeds the horizontal stack one row lower, so 1 + num_blocks * (k // 2). The logits of row i are the
        same computed on rows ``i - reach .. i`` alone (the sampler's window)."""
        return 1 + self.num_blocks * (self.kernel_size // 2)

    def condition_features(self, condition, training=False):
        """Features of the condition code map at ``code_shape`` (what every block adds to its horizontal gates)."""
        return self.condition_net(condition, training=training)

    def call(self, codes, condition=None, training=False, condition_features=None):
        """Logits ``[B, h, w, K]``. ``condition_features`` (from :meth:`condition_features`, cropped to the rows of
        ``codes``) stands in for ``condition``: computed once, it serves every step of a sampler."""
        if self.conditional and condition is None and condition_features is None:
            raise ValueError(f"{self.name} is conditional: pass the {self.condition_shape} condition code map.")
        x = self.embedding(codes)
        if self.conditional and condition_features is None:
            condition_features = self.condition_features(condition, training=training)
        cond = (condition_features,) if self.conditional else ()
        v, h = x, x
        for block in self.blocks:
            v, h = block((v, h, *cond))
        return self.head(h, training=training)

    def get_config(self):
        return {**super().get_config(), "code_shape": list(self.code_shape), "num_codes": self.num_codes,
                "channels": self.channels, "num_blocks": self.num_blocks, "kernel_size": self.kernel_size,
                "condition_shape": None if self.condition_shape is None else list(self.condition_shape),
                "condition_codes": self.condition_codes}


def _code_nll(logits, codes):
    """-log p(codes), summed over the map: ``[B]`` nats (float32, also under mixed precision)."""
    logits = tf.cast(logits, tf.float32)
    return tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=codes, logits=logits), axis=[1, 2])


def _check_code_map(owner: str, codes, shape: tuple[int, int], what: str = "code maps"):
    codes = tf.convert_to_tensor(codes)
    if not codes.dtype.is_integer:
        raise TypeError(f"{owner} expects integer {what}, got dtype {codes.dtype.name}.")
    if tuple(codes.shape[1:]) != tuple(shape):
        raise ValueError(f"{owner} expects {what} of shape (batch, {', '.join(map(str, shape))}), got "
                         f"{tuple(codes.shape)}.")
    return tf.cast(codes, tf.int32)


def _sample_codes(network: GatedPixelCNN, noise, condition=None):
    """Code maps drawn position by position in raster order from uniform ``noise`` ``[n, h, w]``.

    Runs one ``tf.while_loop`` over the h*w positions inside a ``tf.function``: step k runs the
    network on the partial maps and sets position k = (i, j) to the inverse-CDF draw from
    ``logits[:, i, j]`` with ``noise[:, i, j]``. Each step computes only the rows its logits depend on
    (``i - network.reach .. i``: the rows below are not drawn yet and the causal masks ignore them), and a
    conditional network's condition features once for all steps. Returns int32 ``[n, h, w]``.
    """
    noise = tf.convert_to_tensor(noise, tf.float32)
    if tuple(noise.shape[1:]) != network.code_shape:
        raise ValueError(f"{network.name} draws {network.code_shape} code maps from uniform noise of shape "
                         f"(n, {', '.join(map(str, network.code_shape))}), got {tuple(noise.shape)}.")
    if condition is not None:
        condition = tf.convert_to_tensor(condition, tf.int32)
    return _sample_loop(network, noise, condition)


@tf.function(reduce_retracing=True)
def _sample_loop(network, noise, condition):
    h, w = network.code_shape
    position = tf.reshape(tf.range(h * w), [1, h, w])
    features = None if condition is None else network.condition_features(condition)

    def step(k, codes):
        i, j = k // w, k % w
        start = tf.maximum(0, i - network.reach)
        window = codes[:, start:i + 1]
        cropped = None if features is None else features[:, start:i + 1]
        logits = network(window, condition_features=cropped)[:, i - start, j]
        drawn = categorical_from_uniform(logits, noise[:, i, j])
        return k + 1, tf.where(position == k, drawn[:, None, None], codes)

    codes = tf.zeros(tf.shape(noise), tf.int32)
    return tf.while_loop(lambda k, _: k < h * w, step, (tf.constant(0), codes))[1]


@_register
class PixelCNNPrior(BaseVAE):
    """Gated PixelCNN over ``code_shape`` maps of ``num_codes``-way codes (a ``vq_vae``'s codes).

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
    config_constraints = {"num_codes": cfg.Range(2), "channels": cfg.AT_LEAST_1, "num_blocks": cfg.AT_LEAST_1,
                          "kernel_size": cfg.AT_LEAST_1, "code_shape": cfg.AT_LEAST_1, "top_shape": cfg.AT_LEAST_1,
                          "bottom_shape": cfg.AT_LEAST_1}

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
        network = GatedPixelCNN(code_shape, num_codes, channels, num_blocks, kernel_size, name="pixelcnn")
        super().__init__(data_shape=network.code_shape, seed=seed, **kwargs)
        self.network = network
        self.code_shape = network.code_shape
        self.num_codes = int(num_codes)
        self.channels = int(channels)
        self.num_blocks = int(num_blocks)
        self.kernel_size = int(kernel_size)
        self.build((None, *self.code_shape))

    def build(self, input_shape=None):
        self.network.build()
        self.built = True

    def check_inputs(self, codes):
        return _check_code_map(self.name, codes, self.code_shape)

    def call(self, codes, training=False):
        """Logits of p(c_ij | c_<ij), ``[B, h, w, K]``."""
        return self.network(self.check_inputs(codes), training=training)

    def compute_terms(self, codes, training=False, seed=None, condition=None):
        codes = self.check_inputs(codes)
        nll = _code_nll(self(codes, training=training), codes)
        return {"nll": nll, "bits_per_dim": nll / (math.prod(self.code_shape) * math.log(2.0))}

    def objective(self, terms):
        return tf.reduce_mean(terms["nll"])

    def sample(self, n: int, seed=None):
        """``n`` code maps drawn position by position in raster order, int32 ``[n, h, w]``."""
        n = self.check_count(n)
        return self.sample_from_noise(tf.random.stateless_uniform([n, *self.code_shape], self.next_seed(seed)))

    def sample_from_noise(self, noise):
        """Code maps drawn from uniform ``noise`` ``[n, h, w]`` (one number per code): a deterministic
        function of the noise, see :func:`categorical_from_uniform`."""
        return _sample_codes(self.network, noise)

    def endpoints(self):
        """``serving_default`` (per-example ``nll`` and ``bits_per_dim`` of code maps), ``sample``
        (from n) and ``sample_from_noise`` (uniform noise per code) -> ``codes``."""
        shape = [None, *self.code_shape]
        return {
            "serving_default": (lambda codes: self.compute_terms(codes), {"codes": tf.TensorSpec(shape, tf.int32)}),
            "sample": (lambda n: {"codes": self.sample_from_noise(tf.random.uniform(tf.stack([n, *self.code_shape])))},
                       {"n": tf.TensorSpec([], tf.int32)}),
            "sample_from_noise": (lambda noise: {"codes": self.sample_from_noise(noise)},
                                  {"noise": tf.TensorSpec(shape, tf.float32)}),
        }

    def get_config(self):
        config = super().get_config()
        config.pop("data_shape")
        return {**config, "code_shape": list(self.code_shape), "num_codes": self.num_codes,
                "channels": self.channels, "num_blocks": self.num_blocks, "kernel_size": self.kernel_size}


@_register
class HierarchicalPixelCNNPrior(BaseVAE):
    """p(c_top) p(c_bottom | c_top) over VQ-VAE-2's two code maps (a ``vq_vae2``'s codes).

    Inputs are dicts ``{"top": int [B, *top_shape], "bottom": int [B, *bottom_shape]}`` (what
    :func:`vaezoo.data.codes_dataset` makes of a VQ-VAE-2); ``call`` returns the logits of both
    levels under the same keys. The bottom PixelCNN sees the top codes through a conditioning
    network (embedding, convolutions, upsampling to the bottom resolution) that enters every
    gated block. ``nll`` = ``nll_top`` + ``nll_bottom`` nats per image; ``bits_per_dim`` is per code.

    Args:
        top_shape: ``(h, w)`` of the top codes.
        bottom_shape: ``(h, w)`` of the bottom codes, a multiple of ``top_shape``.
        num_codes: K of the top codebook (and of the bottom one unless ``bottom_num_codes`` is set).
        bottom_num_codes: K of the bottom codebook (a ``vq_vae2``'s ``bottom_num_codes``; default ``num_codes``).
        channels: feature channels of both PixelCNNs.
        num_blocks: gated blocks of each PixelCNN.
        kernel_size: odd kernel size of the masked convolutions.
        seed: sampling seed.
    """

    metric_names = ("nll", "nll_top", "nll_bottom", "bits_per_dim")
    input_kind = "codes"
    config_constraints = {"num_codes": cfg.Range(2), "channels": cfg.AT_LEAST_1, "num_blocks": cfg.AT_LEAST_1,
                          "kernel_size": cfg.AT_LEAST_1, "code_shape": cfg.AT_LEAST_1, "top_shape": cfg.AT_LEAST_1,
                          "bottom_shape": cfg.AT_LEAST_1, "bottom_num_codes": cfg.Range(2)}
    code_levels = ("top", "bottom")

    def __init__(
        self,
        top_shape: tuple[int, ...] = (7, 7),
        bottom_shape: tuple[int, ...] = (14, 14),
        num_codes: int = 64,
        channels: int = 64,
        num_blocks: int = 6,
        kernel_size: int = 3,
        seed: int | None = None,
        bottom_num_codes: int | None = None,
        **kwargs,
    ):
        top = GatedPixelCNN(top_shape, num_codes, channels, num_blocks, kernel_size, name="top_pixelcnn")
        bottom = GatedPixelCNN(bottom_shape, bottom_num_codes or num_codes, channels, num_blocks, kernel_size,
                               condition_shape=top_shape, condition_codes=num_codes, name="bottom_pixelcnn")
        super().__init__(data_shape=bottom.code_shape, seed=seed, **kwargs)
        self.top_network, self.bottom_network = top, bottom
        self.top_shape, self.bottom_shape = top.code_shape, bottom.code_shape
        self.num_codes = int(num_codes)
        self.bottom_num_codes = None if bottom_num_codes is None else int(bottom_num_codes)
        self.channels = int(channels)
        self.num_blocks = int(num_blocks)
        self.kernel_size = int(kernel_size)
        self.build()

    def build(self, input_shape=None):
        self.top_network.build()
        self.bottom_network.build()
        self.built = True

    def check_inputs(self, codes):
        if not isinstance(codes, Mapping) or set(codes) != set(self.code_levels):
            got = (f"keys {sorted(codes)}" if isinstance(codes, Mapping)
                   else f"shape {tuple(codes.shape)}" if hasattr(codes, "shape") else type(codes).__name__)
            raise ValueError(
                f"{self.name} expects a dict of code maps with keys {list(self.code_levels)} "
                f"(vaezoo.data.codes_dataset(vq_vae2, images) makes them), got {got}."
            )
        return {
            "top": _check_code_map(self.name, codes["top"], self.top_shape, "top code maps"),
            "bottom": _check_code_map(self.name, codes["bottom"], self.bottom_shape, "bottom code maps"),
        }

    def call(self, codes, training=False):
        """Logits ``{"top": [B, *top_shape, K], "bottom": [B, *bottom_shape, K]}``."""
        codes = self.check_inputs(codes)
        return {
            "top": self.top_network(codes["top"], training=training),
            "bottom": self.bottom_network(codes["bottom"], codes["top"], training=training),
        }

    def compute_terms(self, codes, training=False, seed=None, condition=None):
        codes = self.check_inputs(codes)
        logits = self(codes, training=training)
        nll_top, nll_bottom = _code_nll(logits["top"], codes["top"]), _code_nll(logits["bottom"], codes["bottom"])
        nll = nll_top + nll_bottom
        per_code = (math.prod(self.top_shape) + math.prod(self.bottom_shape)) * math.log(2.0)
        return {"nll": nll, "nll_top": nll_top, "nll_bottom": nll_bottom, "bits_per_dim": nll / per_code}

    def objective(self, terms):
        return tf.reduce_mean(terms["nll"])

    def sample(self, n: int, seed=None):
        """``{"top": int32 [n, *top_shape], "bottom": int32 [n, *bottom_shape]}``: top codes first,
        then bottom codes given them (ancestral sampling)."""
        n = self.check_count(n)
        seed = self.next_seed(seed)
        return self.sample_from_noise(
            tf.random.stateless_uniform([int(n), *self.top_shape], seed),
            tf.random.stateless_uniform([int(n), *self.bottom_shape], tf.reverse(seed, [0]) + 1),
        )

    def sample_from_noise(self, top_noise, bottom_noise):
        """Top and bottom code maps drawn from uniform noise (``[n, *top_shape]``, ``[n, *bottom_shape]``)."""
        top = _sample_codes(self.top_network, top_noise)
        return {"top": top, "bottom": _sample_codes(self.bottom_network, bottom_noise, condition=top)}

    def endpoints(self):
        """``serving_default`` (per-example ``nll``, ``nll_top``, ``nll_bottom``, ``bits_per_dim``),
        ``sample`` (from n) and ``sample_from_noise`` -> ``top_codes``, ``bottom_codes``."""
        top, bottom = [None, *self.top_shape], [None, *self.bottom_shape]

        def generated(top_noise, bottom_noise):
            codes = self.sample_from_noise(top_noise, bottom_noise)
            return {"top_codes": codes["top"], "bottom_codes": codes["bottom"]}

        def draw(n):
            return generated(tf.random.uniform(tf.stack([n, *self.top_shape])),
                             tf.random.uniform(tf.stack([n, *self.bottom_shape])))

        return {
            "serving_default": (lambda top_codes, bottom_codes: self.compute_terms({"top": top_codes, "bottom": bottom_codes}),
                                {"top_codes": tf.TensorSpec(top, tf.int32), "bottom_codes": tf.TensorSpec(bottom, tf.int32)}),
            "sample": (draw, {"n": tf.TensorSpec([], tf.int32)}),
            "sample_from_noise": (generated, {"top_noise": tf.TensorSpec(top, tf.float32),
                                              "bottom_noise": tf.TensorSpec(bottom, tf.float32)}),
        }

    def get_config(self):
        config = super().get_config()
        config.pop("data_shape")
        return {**config, "top_shape": list(self.top_shape), "bottom_shape": list(self.bottom_shape),
                "num_codes": self.num_codes, "bottom_num_codes": self.bottom_num_codes, "channels": self.channels,
                "num_blocks": self.num_blocks, "kernel_size": self.kernel_size}


register_model(PixelCNNPrior, name="pixelcnn_prior")
register_model(HierarchicalPixelCNNPrior, name="hierarchical_pixelcnn_prior")
