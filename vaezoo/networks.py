"""Encoder and decoder networks (plain Keras ``Sequential`` stacks) shared by the families.

* ``mlp``: flatten -> dense layers; the decoder mirrors them and reshapes to the data shape.
* ``conv``: stride-2 4x4 convolutions (each halves height and width) then a dense layer; the
  decoder mirrors them with stride-2 transposed convolutions. Height and width must be
  divisible by ``2 ** len(conv_filters)``.

The decoder outputs the raw parameters of p(x|z) (logits or means) in the data shape; the
likelihood layer turns them into a distribution.
"""

from __future__ import annotations

import math

import keras

ARCHITECTURES = ("mlp", "conv")
ACTIVATIONS = ("relu", "tanh", "elu", "gelu", "silu", "softplus")


def _check(architecture: str, data_shape: tuple[int, ...], conv_filters: tuple[int, ...], activation: str) -> None:
    if activation not in ACTIVATIONS:
        raise ValueError(f"Unknown activation {activation!r}; valid choices: {', '.join(ACTIVATIONS)}.")
    if architecture not in ARCHITECTURES:
        raise ValueError(f"Unknown architecture {architecture!r}; valid choices: {', '.join(ARCHITECTURES)}.")
    if architecture == "conv":
        if len(data_shape) != 3:
            raise ValueError(f"architecture 'conv' needs data_shape (height, width, channels), got {data_shape}.")
        factor = 2 ** len(conv_filters)
        if data_shape[0] % factor or data_shape[1] % factor:
            raise ValueError(
                f"architecture 'conv' with {len(conv_filters)} conv layers needs height and width divisible "
                f"by {factor}, got data_shape {data_shape}."
            )


def build_encoder(
    architecture, data_shape, hidden_units, conv_filters, activation="relu", name="encoder"
) -> keras.Sequential:
    """x ``[B, *data_shape]`` -> features ``[B, F]``."""
    _check(architecture, data_shape, conv_filters, activation)
    stack: list[keras.layers.Layer] = [keras.Input(shape=data_shape)]
    if architecture == "conv":
        stack += [keras.layers.Conv2D(f, 4, strides=2, padding="same", activation=activation) for f in conv_filters]
    stack.append(keras.layers.Flatten())
    stack += [keras.layers.Dense(u, activation=activation) for u in hidden_units]
    return keras.Sequential(stack, name=name)


def build_decoder(
    architecture, data_shape, latent_dim, hidden_units, conv_filters, activation="relu", name="decoder"
) -> keras.Sequential:
    """z ``[B, latent_dim]`` -> raw likelihood parameters ``[B, *data_shape]``."""
    _check(architecture, data_shape, conv_filters, activation)
    stack: list[keras.layers.Layer] = [keras.Input(shape=(latent_dim,))]
    stack += [keras.layers.Dense(u, activation=activation) for u in reversed(hidden_units)]
    if architecture == "mlp":
        stack += [keras.layers.Dense(math.prod(data_shape)), keras.layers.Reshape(data_shape)]
    else:
        factor = 2 ** len(conv_filters)
        h, w, channels = data_shape[0] // factor, data_shape[1] // factor, data_shape[2]
        stack += [
            keras.layers.Dense(h * w * conv_filters[-1], activation=activation),
            keras.layers.Reshape((h, w, conv_filters[-1])),
        ]
        stack += [
            keras.layers.Conv2DTranspose(f, 4, strides=2, padding="same", activation=activation)
            for f in reversed(conv_filters[:-1])
        ]
        stack.append(keras.layers.Conv2DTranspose(channels, 4, strides=2, padding="same"))
    return keras.Sequential(stack, name=name)
