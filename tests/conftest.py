"""Shared fixtures: the real data directory, tiny model overrides, fixed seeds."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

import vaezoo  # noqa: E402
from vaezoo import data  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
# The data sets live beside the checkout (../shared/data), or wherever VAEZOO_DATA_DIR points.
SHARED_DATA = Path(os.environ.get(data.DATA_DIR_ENV) or REPO.parent / "shared" / "data")


@pytest.fixture
def data_dir() -> Path:
    """The real data folder; tests that need it skip (with the reason) when it is absent."""
    if not (SHARED_DATA / "mnist" / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"real MNIST files not found under {SHARED_DATA} (set {data.DATA_DIR_ENV} to the data folder)")
    return SHARED_DATA


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(0)


@pytest.fixture(autouse=True)
def _no_auto_xla(monkeypatch):
    """Tiny models trained for a few steps would spend most of the suite compiling XLA: in tests,
    jit_compile="auto" means no XLA (tests of the default take the ``auto_xla`` fixture)."""
    monkeypatch.setattr(vaezoo.distribute, "AUTO_JIT_COMPILE", False)


@pytest.fixture
def auto_xla(monkeypatch):
    """The library default: jit_compile="auto" is XLA on one device."""
    monkeypatch.setattr(vaezoo.distribute, "AUTO_JIT_COMPILE", True)


def tiny_overrides(name: str) -> dict:
    """Shrink whatever size keys the model's config has, so every model trains in a moment."""
    schema = vaezoo.model_info(name).schema
    shrink = {"latent_dim": 4, "hidden_units": [32], "conv_filters": [8, 8], "prior_components": 3,
              "hidden_channels": 8, "residual_channels": 4, "residual_blocks": 1, "num_codes": 8, "code_dim": 4,
              "channels": 8, "num_blocks": 2, "top_shape": [4, 4], "bottom_shape": [8, 8],
              "discriminator_units": [16, 16], "num_categorical": 2, "num_classes": 2,
              "num_flows": 2, "flow_hidden_units": [8], "prior_flows": 1, "num_pseudo_inputs": 4, "num_groups": 2,
              "classifier_units": [16]}
    if "latent_dims" in schema:  # several stochastic layers: one list of widths per layer
        shrink = {**shrink, "latent_dims": [4, 2], "hidden_units": [[16], [8]]}
    return {k: v for k, v in shrink.items() if k in schema}


def tiny(name: str, **overrides):
    return vaezoo.get(name, **{**tiny_overrides(name), **overrides})


def batch_for(model, n: int = 16, seed: int = 0):
    """A fixed batch of binary sprite images in the model's data shape (or code maps drawn from them).

    A prior over several code levels (``code_levels``) gets a dict of code maps, one per level.
    """
    if model.input_kind == "codes":
        def code_maps(shape):
            sprites = data.render_sprites(data.sprite_factors(n, seed=seed), size=shape[0])[..., 0]
            return (sprites * (model.num_codes - 1)).astype("int32")  # two codes, arranged like sprites

        levels = getattr(model, "code_levels", None)
        if levels:
            return {level: code_maps(getattr(model, f"{level}_shape")) for level in levels}
        return code_maps(model.code_shape)
    h, w, c = model.data_shape
    assert h == w, "sprites are square"
    factors = data.sprite_factors(n, seed=seed)
    images = np.repeat(data.render_sprites(factors, size=h), c, axis=-1)
    if getattr(model, "uses_condition", False) and hasattr(model, "num_classes"):  # cvae: the shapes as labels
        return {"images": images, "labels": (factors["shape"] % model.num_classes).astype("int32")}
    return images


def images_of(batch):
    """The images of :func:`batch_for`'s batch (a conditional model's is a dict with its labels)."""
    return batch["images"] if isinstance(batch, dict) and "images" in batch else batch


def labels_of(model, batch) -> dict:
    """``{"labels": ...}`` for a conditional model's batch (keyword arguments of decode and sample), else {}."""
    return {"labels": batch["labels"]} if isinstance(batch, dict) and "labels" in batch else {}


def assert_nested_equal(a, b, **kwargs):
    """assert_array_equal over matching nested structures (tensors, or dicts of them)."""
    tf.nest.assert_same_structure(a, b)
    for x, y in zip(tf.nest.flatten(a), tf.nest.flatten(b)):
        np.testing.assert_array_equal(x, y, **kwargs)


def rgb_image_folder(root: Path, n: int = 24, size: int = 64, seed: int = 0) -> Path:
    """A user's image folder, generated: PNGs of red discs in ``red/`` and blue ones in ``blue/`` (two classes)
    on a noisy background, ``size`` x ``size`` RGB."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    for i in range(n):
        colour = ("red", "blue")[i % 2]
        cy, cx = rng.integers(size // 4, 3 * size // 4, 2)
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 < rng.integers(size // 8, size // 3) ** 2
        image = rng.integers(0, 60, (size, size, 3)).astype(np.uint8)
        image[disc] = (220, 30, 30) if colour == "red" else (30, 30, 220)
        (root / colour).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(root / colour / f"{i:03d}.png")
    return root
