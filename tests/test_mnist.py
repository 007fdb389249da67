"""Training on the real MNIST files (skipped, with the reason, where they are absent)."""

import keras
import numpy as np

import vaezoo
from vaezoo import data


def test_elbo_improves_within_one_epoch_on_5000_images(data_dir):
    keras.utils.set_random_seed(0)
    model = vaezoo.get("vae", seed=0)  # the zoo config: MLP 784-512-256-32, Bernoulli, N(0, I)
    train = data.load("mnist", "train", batch_size=100, data_dir=data_dir, binarize="dynamic", seed=0, limit=5000)
    test = data.load("mnist", "test", batch_size=500, data_dir=data_dir, binarize="dynamic", seed=1, limit=1000)
    model.compile(keras.optimizers.Adam(1e-3))
    before = model.evaluate(test, return_dict=True, verbose=0)["elbo"]
    history = model.fit(train, epochs=1, verbose=0)
    after = model.evaluate(test, return_dict=True, verbose=0)
    # An untrained decoder scores about -784 log 2 = -543 nats; 50 steps must gain far more than noise.
    assert before < -500
    assert after["elbo"] - before > 250, (before, after)
    assert after["elbo"] > -230, after
    assert np.isclose(after["elbo"], -(after["reconstruction"] + after["kl"]), rtol=1e-4)
    assert len(history.history["elbo"]) == 1
