"""The fused fast path (vaezoo.fused): a block of steps in one XLA program trains exactly as
Keras' own loop does, one step per batch, with the same logs, callbacks and end-of-data handling."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

import vaezoo
from conftest import batch_for, tiny

# 11 batches: 10 of 8 examples and a last one of 5 (82 = 10 * 8 + 2 would be too small a remainder
# to differ from a full batch in every model's statistics; 85 = 10 * 8 + 5).
EXAMPLES, BATCH = 85, 8
STEPS_PER_EXECUTION = 4


def _data(model):
    x = batch_for(model, n=EXAMPLES, seed=1)
    return tf.data.Dataset.from_tensor_slices(x).batch(BATCH)


class Counter(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.batches = []

    def on_train_batch_end(self, batch, logs=None):
        self.batches.append((batch, {k: float(v) for k, v in logs.items()}))


def _train(name, fused: bool, epochs=2):
    keras.utils.set_random_seed(0)
    model = tiny(name, seed=0)
    # Both XLA: the fused block against Keras' loop of XLA-compiled steps (XLA's numerics differ
    # slightly from the graph kernels').
    model.compile(keras.optimizers.Adam(1e-3), jit_compile=True, steps_per_execution=STEPS_PER_EXECUTION)
    model.fuse_steps = fused  # also for the conv models, which do not fuse by default (too slow in XLA)
    counter = Counter()
    ds = _data(model)
    history = model.fit(ds, validation_data=ds, epochs=epochs, verbose=0, callbacks=[counter]).history
    evaluated = model.evaluate(ds, verbose=0, return_dict=True)
    return model, history, counter.batches, evaluated


def _compare(name):
    fused, h_fused, b_fused, e_fused = _train(name, fused=True)
    keras_loop, h_keras, b_keras, e_keras = _train(name, fused=False)
    assert fused.train_function.__qualname__.startswith("make_function.")  # the fused path ran
    assert not keras_loop.train_function.__qualname__.startswith("make_function.")
    # One optimizer step per batch: 11 per epoch, the short last block and smaller last batch included.
    assert int(fused.optimizer.iterations) == int(keras_loop.optimizer.iterations) == 2 * 11
    # The same updates: weights, epoch metrics (train and validation), evaluate().
    for a, b in zip(keras_loop.weights, fused.weights):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5, err_msg=a.path)
    assert h_fused.keys() == h_keras.keys()
    for key in h_keras:
        np.testing.assert_allclose(h_fused[key], h_keras[key], rtol=1e-4, atol=1e-4, err_msg=key)
    for key in e_keras:
        np.testing.assert_allclose(e_fused[key], e_keras[key], rtol=1e-4, atol=1e-4, err_msg=key)
    # Callbacks see the same batches (one call per block of 4 steps: 0-3, 4-7, 8-10; the short last
    # block ends at the epoch's last step, where Keras alone would report 11) and logs.
    assert [b for b, _ in b_fused] == [b for b, _ in b_keras] == [3, 7, 10] * 2
    for (_, logs_f), (_, logs_k) in zip(b_fused, b_keras):
        assert logs_f.keys() == logs_k.keys()
        np.testing.assert_allclose(list(logs_f.values()), list(logs_k.values()), rtol=1e-4, atol=1e-4)


def test_fused_block_equals_keras_loop():
    _compare("vae")


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in vaezoo.list_models() if n != "vae"])
def test_fused_block_equals_keras_loop_every_model(name):
    _compare(name)


def test_fused_path_only_where_it_applies(auto_xla):
    model = tiny("vae", seed=0)
    model.compile(keras.optimizers.Adam(1e-3))  # the defaults: XLA, 32 steps per execution
    assert vaezoo.fused.applies(model) and model.fuse_steps
    model.make_train_function(force=True)
    assert model.train_function.__qualname__.startswith("make_function.")
    # Per family: conv models do not fuse; iwae and vq_vae2 train without XLA unless asked.
    assert not tiny("vae_conv").fuse_steps
    for name in ("iwae", "vq_vae2"):
        other = tiny(name)
        other.compile(keras.optimizers.Adam(1e-3))
        assert other.jit_compile is False and other.steps_per_execution == 32, name
        other.compile(keras.optimizers.Adam(1e-3), jit_compile=True)
        assert other.jit_compile is True, name
    for settings in ({"jit_compile": False}, {"steps_per_execution": 1}, {"run_eagerly": True}):
        model.compile(keras.optimizers.Adam(1e-3), **settings)
        assert not vaezoo.fused.applies(model), settings
        model.make_train_function(force=True)
        assert not model.train_function.__qualname__.startswith("make_function."), settings


def test_fused_train_on_batch_and_a_generator_of_batches():
    keras.utils.set_random_seed(0)
    model = tiny("vae", seed=0)
    model.compile(keras.optimizers.Adam(1e-3), jit_compile=True, steps_per_execution=4)
    x = batch_for(model, n=8, seed=2)
    logs = model.train_on_batch(x, return_dict=True)
    assert int(model.optimizer.iterations) == 1 and np.isfinite(logs["loss"])
    logs = model.test_on_batch(x, return_dict=True)
    assert set(logs) == {"loss", *model.metric_names} and int(model.optimizer.iterations) == 1
