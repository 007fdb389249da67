"""vaezoo.flows: the Keras 3 MADE's masks make it autoregressive (checked on its Jacobian), the context reaches
every output, and the layer round-trips through its config and a .keras file."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from vaezoo import flows


def _jacobian(made, x, context=None):
    x = tf.constant(x)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        if context is not None:
            context = tf.constant(context)
            tape.watch(context)
        out = made(x, context=context)  # [1, D, P]
    jx = tape.jacobian(out, x).numpy()[0, :, :, 0, :]  # [D, P, D]
    jc = None if context is None else tape.jacobian(out, context).numpy()[0, :, :, 0, :]
    return jx, jc


@pytest.mark.parametrize("order", ["left-to-right", "right-to-left", [3, 1, 5, 2, 4]])
def test_output_i_depends_exactly_on_the_inputs_of_lower_degree(order):
    made = flows.MADE(params=2, hidden_units=(24, 24), activation="tanh", input_order=order, seed=0)
    made.build((None, 5))
    for b in made.biases:  # non-zero biases, so no unit sits at a symmetric point
        b.assign(np.random.default_rng(1).normal(0, 0.3, b.shape).astype("float32"))
    x = np.random.default_rng(0).normal(size=(1, 5)).astype("float32")
    jx, _ = _jacobian(made, x)
    degrees = flows.input_degrees(5, order)
    allowed = degrees[None, :] < degrees[:, None]  # [i, j]: input j may reach output i
    for p in range(2):
        assert np.all(jx[:, p, :][~allowed] == 0.0), order  # exactly zero: the masks cut the paths
        assert np.all(np.abs(jx[:, p, :][allowed]) > 1e-6), order  # every allowed path is used
    # ordered by degree, the Jacobian is strictly lower triangular
    by_degree = np.argsort(degrees)
    assert np.all(np.triu(jx[by_degree][:, 0][:, by_degree]) == 0.0)


def test_the_context_reaches_every_output_and_is_required_when_declared():
    made = flows.MADE(params=3, hidden_units=(16,), activation="tanh", context_dim=4, seed=0)
    made.build((None, 3))
    rng = np.random.default_rng(2)
    x, h = rng.normal(size=(1, 3)).astype("float32"), rng.normal(size=(1, 4)).astype("float32")
    jx, jc = _jacobian(made, x, h)
    assert np.all(np.abs(jc).sum(-1) > 1e-6)  # the first output too (it sees no input at all)
    assert np.all(jx[0] == 0.0)
    with pytest.raises(ValueError, match="context_dim=4: pass a context"):
        made(x)
    with pytest.raises(ValueError, match="Unknown input_order 'random'; valid choices: left-to-right, right-to-left"):
        flows.MADE(input_order="random").build((None, 3))
    with pytest.raises(ValueError, match=r"permutation of 1\.\.3, got \[1, 1, 2\]"):
        flows.MADE(input_order=[1, 1, 2]).build((None, 3))


def test_made_round_trips_its_config_and_a_keras_file(tmp_path):
    made = flows.MADE(params=2, hidden_units=(8, 8), input_order=[2, 3, 1, 4], context_dim=2, seed=3)
    x = keras.Input((4,))
    h = keras.Input((2,))
    model = keras.Model([x, h], made(x, context=h))
    assert len(model.weights) == 2 * 3 + 2  # three masked layers (kernel, bias) and the two context kernels
    data = [np.random.default_rng(0).normal(size=(5, 4)).astype("float32"),
            np.random.default_rng(1).normal(size=(5, 2)).astype("float32")]
    clone = flows.MADE.from_config(made.get_config())
    clone.build((None, 4))
    clone.set_weights(made.get_weights())
    np.testing.assert_array_equal(clone(data[0], context=data[1]), made(data[0], context=data[1]))
    model.save(tmp_path / "made.keras")
    loaded = keras.models.load_model(tmp_path / "made.keras")
    np.testing.assert_array_equal(loaded.predict(data, verbose=0), model.predict(data, verbose=0))
