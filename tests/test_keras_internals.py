"""The Keras internals vaezoo relies on (vaezoo.keras_internals): present in the pinned Keras, and used."""

import keras
import numpy as np
import pytest

import vaezoo
from vaezoo import keras_internals
from vaezoo.models.base import BaseVAE


def test_the_installed_keras_has_every_internal_vaezoo_uses():
    # Fails loudly, naming the internal, on a Keras upgrade that moves one of them.
    assert keras_internals.check() == [], (keras.__version__, keras_internals.check())


def test_the_check_notices_a_missing_hook(monkeypatch):
    owner = next(c for c in keras.Model.__mro__ if keras_internals.SYMBOLIC_BUILD_HOOK in vars(c))
    monkeypatch.delattr(owner, keras_internals.SYMBOLIC_BUILD_HOOK)
    assert any("would never run" in p for p in keras_internals.check())


def test_base_vae_overrides_the_hook_by_its_checked_name():
    assert keras_internals.SYMBOLIC_BUILD_HOOK in vars(BaseVAE)


def test_fit_goes_through_the_build_hook_and_the_cached_validation_pass(monkeypatch):
    calls = {"hook": 0, "cached": []}
    hook = getattr(BaseVAE, keras_internals.SYMBOLIC_BUILD_HOOK)
    evaluate = BaseVAE.evaluate

    def counting_hook(self, iterator=None, data_batch=None):
        calls["hook"] += 1
        return hook(self, iterator=iterator, data_batch=data_batch)

    def recording_evaluate(self, *args, **kwargs):
        calls["cached"].append(keras_internals.is_cached_evaluation(kwargs))
        return evaluate(self, *args, **kwargs)

    monkeypatch.setattr(BaseVAE, keras_internals.SYMBOLIC_BUILD_HOOK, counting_hook)
    monkeypatch.setattr(BaseVAE, "evaluate", recording_evaluate)
    model = vaezoo.get("vae", hidden_units=[8], latent_dim=2, data_shape=[4, 4, 1])
    model.compile(keras.optimizers.Adam(1e-3))
    x = np.random.default_rng(0).uniform(size=(32, 4, 4, 1)).astype("float32")
    model.fit(x, batch_size=16, epochs=1, validation_data=(x,), verbose=0)
    assert calls["hook"] >= 1 and model.optimizer.built  # the override built the optimizer
    assert calls["cached"] == [True]  # fit's validation pass is recognised (its first batch is not re-checked)
    model.evaluate(x, verbose=0)
    assert calls["cached"] == [True, False]


def test_a_layer_added_after_build_is_tracked_and_an_old_one_untracked():
    model = vaezoo.get("vae", hidden_units=[8], latent_dim=2, data_shape=[4, 4, 1])
    assert model._tracker.locked  # built in __init__: Keras refuses new state outside the context
    with pytest.raises(ValueError, match="already built"):
        model.extra = keras.layers.Dense(1)
    count = len(model.weights)
    with keras_internals.track_after_build(model):
        model.extra = keras.layers.Dense(1)
    assert model._tracker.locked
    model.extra.build((None, 3))
    assert len(model.weights) == count + 2
    with keras_internals.track_after_build(model):
        keras_internals.untrack(model, model.extra)
        model.extra = keras.layers.Dense(5)
    model.extra.build((None, 3))
    assert len(model.weights) == count + 2 and (3, 5) in [tuple(w.shape) for w in model.weights]
