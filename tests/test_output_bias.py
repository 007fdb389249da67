"""``vaezoo.training.init_output_bias``: the decoder starts at the training data's mean image (Burda et al.)."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

import vaezoo
from vaezoo import training


def images(shape, n=64, seed=0):
    # Per-pixel means spread over (0, 1), some exactly 0 or 1 (the clip's cases).
    rng = np.random.default_rng(seed)
    x = (rng.uniform(size=(n, *shape)) < rng.uniform(size=shape) ** 2).astype("float32")
    x[:, 0, 0, :] = 0.0
    x[:, -1, -1, :] = 1.0
    return x


def zero_output_kernel(model):
    layer = [l for l in model.decoder._flatten_layers() if getattr(l, "use_bias", False)][-1]
    layer.kernel.assign(tf.zeros_like(layer.kernel))


@pytest.mark.parametrize("name", ["vae", "vae_2layer", "ladder_vae", "iwae"])
def test_bernoulli_decoder_starts_at_the_clipped_mean_image(name):
    model = vaezoo.get(name, seed=0)
    x = images(model.data_shape)
    # From a pipeline of (x, y) batches, as fit gets them.
    bias = training.init_output_bias(model, tf.data.Dataset.from_tensor_slices((x, np.zeros(len(x)))).batch(10))
    zero_output_kernel(model)  # the output is then the bias alone, whatever z is
    z = tf.random.stateless_normal([3, model.latent_dim], seed=[1, 2])
    expected = np.clip(x.mean(axis=0), 1e-3, 1 - 1e-3)
    np.testing.assert_allclose(np.asarray(model.decode(z)), np.broadcast_to(expected, (3, *expected.shape)), atol=1e-5)
    assert bias.shape == (int(np.prod(model.data_shape)),)
    assert np.isclose(bias.max(), np.log(999.0), atol=1e-4) and np.isclose(bias.min(), -np.log(999.0), atol=1e-4)


def test_gaussian_mean_and_conv_channel_bias():
    x = images((28, 28, 1))
    model = vaezoo.get("vae", likelihood="gaussian")
    bias = training.init_output_bias(model, x)  # an array of examples
    np.testing.assert_allclose(bias, x.mean(axis=0).reshape(-1), atol=1e-6)  # the identity link
    conv = vaezoo.get("vae_conv", data_shape=[32, 32, 3])
    rgb = np.random.default_rng(1).uniform(size=(20, 32, 32, 3)).astype("float32") * [0.2, 0.5, 0.9]
    bias = training.init_output_bias(conv, rgb)
    means = rgb.reshape(-1, 3).mean(axis=0)
    np.testing.assert_allclose(bias, np.log(means / (1 - means)), rtol=1e-5)  # one per channel


def test_refuses_what_it_cannot_set():
    with pytest.raises(ValueError, match="continuous_bernoulli.*bernoulli, gaussian"):
        training.init_output_bias(vaezoo.get("vae", likelihood="continuous_bernoulli"), images((28, 28, 1)))
    with pytest.raises(ValueError, match=r"\(32, 32, 1\).*expects \(28, 28, 1\)"):
        training.init_output_bias(vaezoo.get("vae"), images((32, 32, 1)))
    with pytest.raises(ValueError, match="no examples"):
        training.init_output_bias(vaezoo.get("vae"), tf.data.Dataset.from_tensor_slices(images((28, 28, 1))).batch(8).take(0))
