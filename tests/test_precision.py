"""Mixed precision: networks in float16/bfloat16, distributions, log-probabilities and losses in float32."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

import vaezoo
from conftest import batch_for, tiny

# Largest difference from float32, relative to the term's mean magnitude: float16 keeps 11
# significant bits, bfloat16 8 (measured: <= 3e-3 and <= 2.6e-2 over every model's terms).
TOLERANCE = {"mixed_float16": 1e-2, "mixed_bfloat16": 5e-2}


@pytest.mark.parametrize("name", vaezoo.list_models())
@pytest.mark.parametrize("policy", sorted(TOLERANCE))
def test_mixed_precision_terms_are_float32_and_close_to_float32(name, policy):
    reference = tiny(name, seed=0)
    model = tiny(name, seed=0, mixed_precision=policy)
    model.set_weights(reference.get_weights())
    low = policy.split("_")[1]
    compute = {layer.compute_dtype for layer in model._flatten_layers(include_self=False)}
    assert low in compute  # the networks compute in 16 bits...
    assert all(v.dtype == "float32" for v in model.weights if v.dtype.startswith(("float", "bfloat")))  # ...on float32 weights
    x = batch_for(model, n=16)
    seed = tf.constant([1, 2])
    terms, expected = model.compute_terms(x, seed=seed), reference.compute_terms(x, seed=seed)
    for key in model.metric_names:
        assert terms[key].dtype == tf.float32, key
        a, b = np.asarray(terms[key]), np.asarray(expected[key])
        assert np.all(np.isfinite(a)), key
        scale = error_scale(key, expected)
        assert np.max(np.abs(a - b)) <= TOLERANCE[policy] * scale + 1e-4, (key, scale, a, b)
    assert model.objective(terms).dtype == tf.float32


def error_scale(key, terms):
    """The size a term's 16-bit rounding error is proportional to: the term's own mean magnitude, or, for a KL
    term of a model that reports its log-densities, the log-densities log q(z) and log p(z) it may subtract.

    A Monte-Carlo KL (the hierarchical models' kl and kl_1 .. kl_L, the flows') is log q(z) - log p(z) at a sample:
    two numbers of size ~d that nearly cancel, so its rounding error follows them, not the small difference
    (measured under mixed_bfloat16 over three seeds: up to 4.4% of the mean |kl_2| of vae_2layer and 10% in CI's
    run of ladder_vae, but at most 0.6% of the log-densities' size, for every model).
    """
    scale = float(np.mean(np.abs(np.asarray(terms[key]))))
    if key.startswith("kl") and "log_qz" in terms and "log_pz" in terms:
        operands = np.mean(np.abs(np.asarray(terms["log_qz"]))) + np.mean(np.abs(np.asarray(terms["log_pz"])))
        scale = max(scale, float(operands))
    return scale


# Every model in the slow suite (a trace and 32 steps each); one of each kind by default.
FAST = ("vae", "vq_vae")


@pytest.mark.parametrize("name", [pytest.param(n, marks=() if n in FAST else pytest.mark.slow)
                                  for n in vaezoo.list_models()])
def test_mixed_float16_trains_with_loss_scaling(name):
    model = tiny(name, seed=0, mixed_precision="mixed_float16")
    model.compile(keras.optimizers.Adam(1e-3))
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    x = batch_for(model, n=16)
    # The loss scale starts at 2**15 and halves on each overflowing (skipped) step, then training proceeds.
    history = model.fit(tf.data.Dataset.from_tensors(x).repeat(16), epochs=2, verbose=0).history
    for key, values in history.items():
        assert np.all(np.isfinite(values)), (key, values)
    assert history["loss"][-1] < history["loss"][0]
    assert all(np.all(np.isfinite(w.numpy())) for w in model.weights if w.dtype.startswith("float"))


def test_mixed_precision_survives_save_and_load(tmp_path):
    model = tiny("vae_conv", seed=0, mixed_precision="mixed_bfloat16")
    x = batch_for(model, n=4)
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert loaded.encoder.compute_dtype == "bfloat16" and loaded.likelihood_layer.compute_dtype == "float32"
    np.testing.assert_allclose(loaded.reconstruct(x), model.reconstruct(x), rtol=1e-6, atol=1e-6)
    assert keras.config.dtype_policy().name == "float32"  # the global policy is restored


def test_unknown_precision_is_refused_with_the_choices():
    with pytest.raises(ValueError, match=r"'mixed_precision'.*one of float32, mixed_float16, mixed_bfloat16, got 'float8'"):
        vaezoo.get("vae", mixed_precision="float8")
    assert keras.config.dtype_policy().name == "float32"
