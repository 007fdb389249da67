"""Heavier checks, run with `pytest -m slow` (CI runs them after the default suite)."""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from PIL import Image

import vaezoo
from vaezoo import data

pytestmark = pytest.mark.slow


def test_quick_start_command(tmp_path):
    """The README's main job: `vaezoo train beta_vae_conv --epochs 2 --out ...` on the embedded sprites."""
    out = tmp_path / "quickstart"
    proc = subprocess.run(
        [sys.executable, "-m", "vaezoo", "train", "beta_vae_conv", "--epochs", "2", "--out", str(out), "--verbose", "2"],
        capture_output=True, text=True, timeout=900, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    samples = np.asarray(Image.open(out / "samples.png"), dtype=np.float32) / 255
    assert samples.std() > 0.1  # sprites on a black background, not a blank grid
    model = keras.models.load_model(out / "model.keras")
    test = data.load("sprites", "test", batch_size=500)
    result = model.evaluate(test, return_dict=True, verbose=0)
    # A blank decoder scores 1024 log 2 = 710 nats on 32x32 binary images.
    assert result["elbo"] > -150, result


def test_vae_on_full_mnist_reaches_a_sensible_elbo(data_dir):
    """Three epochs of `vae` on dynamically binarized MNIST; the test ELBO must be near the literature."""
    keras.utils.set_random_seed(0)
    model = vaezoo.get("vae", seed=0)
    train = data.load("mnist", "train", batch_size=128, data_dir=data_dir, binarize="dynamic", seed=0)
    test = data.load("mnist", "test", batch_size=1000, data_dir=data_dir, binarize="dynamic", seed=1)
    model.compile(keras.optimizers.Adam(1e-3), jit_compile=True)
    model.fit(train, epochs=3, verbose=0)
    result = model.evaluate(test, return_dict=True, verbose=0)
    # Kingma & Welling-sized MLP VAEs reach about -100 nats after tens of epochs; after 3, -115 is ample.
    assert -115 < result["elbo"] < -85, result
    assert 10 < result["kl"] < 40, result
