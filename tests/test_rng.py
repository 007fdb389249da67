"""vaezoo.rng: ThreeFry for noise traced under XLA, TensorFlow's default elsewhere; the steps choose by their
compile setting."""

import numpy as np
import pytest
import tensorflow as tf

import vaezoo
from vaezoo import rng

SEED = tf.constant([7, 11], tf.int32)


def test_outside_xla_the_draw_is_tensorflows_default():
    np.testing.assert_array_equal(rng.stateless_normal([5, 3], SEED), tf.random.stateless_normal([5, 3], SEED))
    assert not rng.tracing_for_xla()


def test_under_xla_the_draw_is_threefry_standard_normal_and_reproducible():
    @tf.function(jit_compile=True)
    def draw(seed):
        with rng.under_xla():
            return rng.stateless_normal([256, 64], seed)

    a, b, c = draw(SEED).numpy(), draw(SEED).numpy(), draw(tf.constant([7, 12])).numpy()
    np.testing.assert_array_equal(a, b)  # a function of the seed
    assert abs(a.mean()) < 4 / 128 and abs(a.std() - 1) < 0.02  # 16384 draws: 4 standard errors
    assert abs(np.corrcoef(a.ravel(), c.ravel())[0, 1]) < 4 / 128  # neighbouring seeds: unrelated streams
    assert not np.allclose(a, tf.random.stateless_normal([256, 64], SEED))  # not Philox's numbers
    assert not rng.tracing_for_xla()  # the flag is reset after the block


@pytest.mark.parametrize("jit", [True, False])
def test_the_training_step_draws_with_the_algorithm_of_its_compile_setting(jit, monkeypatch):
    flags = []
    original = rng.stateless_normal

    def spy(shape, seed):
        flags.append(rng.tracing_for_xla())
        return original(shape, seed)

    monkeypatch.setattr(rng, "stateless_normal", spy)
    model = vaezoo.get("vae", latent_dim=2, hidden_units=[8], seed=0)
    model.compile("adam", jit_compile=jit, steps_per_execution=2)
    x = (np.random.default_rng(0).random((8, 28, 28, 1)) < 0.2).astype("float32")
    model.fit(x, batch_size=4, epochs=1, verbose=0)
    model.evaluate(x, batch_size=4, verbose=0)
    assert flags and set(flags) == {jit}
