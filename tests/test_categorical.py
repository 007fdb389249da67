"""categorical_vae: the Concrete sampler, both KL forms, and the importance-sampled likelihood against an
exact enumeration of the codes."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

import vaezoo
from vaezoo import evaluate

from conftest import batch_for

tfd = tfp.distributions


def small(**overrides):
    return vaezoo.get("categorical_vae", **{"num_categorical": 1, "num_classes": 4, "latent_dim": 4,
                                            "hidden_units": [16], "seed": 0, **overrides})


def test_the_concrete_sampler_draws_tfps_relaxed_one_hot_law_and_scores_its_density():
    model = small(num_categorical=2, latent_dim=8)
    layer = model.posterior_layer
    layer.temperature.assign(0.7)
    logits = tf.constant([[1.0, -0.5, 0.2, 0.0, 2.0, 0.0, 0.0, -1.0]])
    z, log_q = layer.sample_and_log_prob((logits,), layer.draw_noise(50_000, 1, tf.constant([1, 2])))
    reference = tfd.RelaxedOneHotCategorical(0.7, logits=tf.reshape(logits, [2, 4]))
    drawn = reference.sample(50_000, seed=(3, 4)).numpy().reshape(50_000, 8)
    np.testing.assert_allclose(z.numpy()[:, 0].mean(0), drawn.mean(0), atol=0.01)
    np.testing.assert_allclose(z.numpy()[:, 0].std(0), drawn.std(0), atol=0.01)
    expected = tf.reduce_sum(reference.log_prob(tf.reshape(z[:200, 0], [200, 2, 4])), -1)
    np.testing.assert_allclose(log_q[:200, 0], expected, rtol=1e-3, atol=1e-3)
    hard = layer.point((logits,)).numpy()
    np.testing.assert_array_equal(hard, [[1, 0, 0, 0, 1, 0, 0, 0]])


def test_discrete_kl_is_the_closed_form_of_the_hard_samples_monte_carlo_kl():
    model = small(num_categorical=3, latent_dim=12)
    logits = tf.constant(np.random.default_rng(0).normal(0, 1.5, (2, 12)), tf.float32)
    closed = model.discrete_kl(logits).numpy()
    _, log_q = model._hard_samples(logits, 20_000, tf.constant([5, 6]))
    monte_carlo = (log_q.numpy() + 3 * math.log(4)).mean(0)  # log q(c) - log p(c), p uniform
    np.testing.assert_allclose(monte_carlo, closed, atol=0.03)
    assert np.all(closed >= 0)


def test_importance_sampled_likelihood_matches_the_exact_sum_over_codes():
    model = small()
    x = (np.random.default_rng(1).random((3, 28, 28, 1)) > 0.5).astype("float32")
    codes = np.eye(4, dtype="float32")  # one variable of 4 classes: every code
    log_px = np.stack([model.likelihood_distribution(np.repeat(c[None], 3, 0)).log_prob(x).numpy() for c in codes])
    exact = np.logaddexp.reduce(log_px, axis=0) - math.log(4)
    estimate = evaluate.log_likelihood(model, x, num_samples=4000, batch_size=3).per_example
    np.testing.assert_allclose(estimate, exact, atol=0.05)


def test_temperature_anneals_and_prior_samples_are_uniform_one_hot_codes():
    model = small(temperature_start=1.0, temperature_end=0.5, temperature_decay=0.1)
    model.compile(keras.optimizers.Adam(1e-3))
    x = batch_for(model, n=8)
    model.fit(x, batch_size=2, epochs=1, verbose=0)  # 4 steps: tau at step 3 was assigned in the last one
    np.testing.assert_allclose(float(model.posterior_layer.temperature), math.exp(-0.3), rtol=1e-5)
    assert float(model.temperature(100)) == pytest.approx(0.5)
    z = model.prior_layer.from_noise(**model.prior_layer.draw_noise(8000, tf.constant([1, 1]))).numpy()
    assert set(np.unique(z)) == {0.0, 1.0} and np.all(z.sum(-1) == 1)
    np.testing.assert_allclose(z.mean(0), 0.25, atol=0.02)
    grid = model.traverse(x[0])
    assert grid.shape == (1, 4, *model.data_shape)


def test_categorical_vae_refuses_bad_settings():
    with pytest.raises(vaezoo.ConfigError, match="'temperature_start'.*> 0.*got 0"):
        vaezoo.get("categorical_vae", temperature_start=0)
    with pytest.raises(vaezoo.ConfigError, match="latent_dim must be num_categorical \\* num_classes = 20 \\* 10 = 200"):
        vaezoo.get("categorical_vae", latent_dim=32)
    with pytest.raises(vaezoo.ConfigError, match="straight_through.*kl_estimator 'discrete'"):
        vaezoo.get("categorical_vae", straight_through=True, kl_estimator="relaxed")
    with pytest.raises(vaezoo.ConfigError, match="'prior'.*one of relaxed_uniform.*'normal'"):
        vaezoo.get("categorical_vae", prior="normal")
    with pytest.raises(vaezoo.ConfigError, match="'num_classes' of the posterior 'concrete' must be >= 2"):
        vaezoo.layers.POSTERIORS.build("concrete", {"num_classes": 1}, latent_dim=4)


def test_the_reference_restatement_of_jangs_notebook_trains_both_kl_forms(data_dir):
    """benchmarks/gumbel_reference.py (the cross-check of categorical_vae in docs/results.md) runs and
    reports finite losses in windows, with the closed-form KL non-negative."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import gumbel_reference

    for kl in ("relaxed", "categorical"):
        curve = list(gumbel_reference.train(kl, steps=4, every=2, tau=1.0, learning_rate=3e-4, seed=0,
                                            data_dir=data_dir))
        assert [step for step, _, _ in curve] == [2, 4]
        assert all(np.isfinite(loss) and 400 < loss < 800 for _, loss, _ in curve)  # -log p of a blank decoder ~ 543
        if kl == "categorical":
            assert all(kl_mean >= 0 for _, _, kl_mean in curve)


def test_the_kl_term_follows_kl_estimator():
    x = batch_for(small(), n=4)
    discrete = small()  # the default: closed form
    terms = discrete.compute_terms(x, seed=3)
    np.testing.assert_allclose(terms["kl"], discrete.discrete_kl(terms["posterior_logits"]), rtol=1e-6)
    np.testing.assert_allclose(terms["elbo"], -(terms["reconstruction"] + terms["kl"]), rtol=1e-6)
    relaxed = small(kl_estimator="relaxed")
    terms = relaxed.compute_terms(x, seed=3)
    np.testing.assert_allclose(terms["kl"], np.mean(terms["log_qz"] - terms["log_pz"], 0), rtol=1e-5)
    assert not np.allclose(terms["kl"], relaxed.discrete_kl(terms["posterior_logits"]))
