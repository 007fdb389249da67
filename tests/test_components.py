"""The pluggable inference model: component registries, the posterior interface, bounds of log-weights,
the condition hook and constructor checks from the one schema."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

import vaezoo
from vaezoo import bounds
from vaezoo import layers as dl
from vaezoo.models.base import BaseVAE

from conftest import batch_for, tiny

tfd = tfp.distributions


@pytest.fixture
def laplace_prior():
    @dl.register_prior("test_laplace")
    class LaplacePrior(dl.Prior):
        def call(self, inputs=None):
            zeros = tf.zeros([self.latent_dim])
            return tfd.Independent(tfd.Laplace(zeros, tf.ones_like(zeros)), 1)

        def from_noise(self, noise):
            return tfd.Laplace(0.0, 1.0).quantile(tfd.Normal(0.0, 1.0).cdf(noise))

    yield LaplacePrior
    dl.PRIORS.unregister("test_laplace")


@pytest.fixture
def softplus_posterior():
    @dl.register_posterior("test_softplus_gaussian")
    class SoftplusGaussian(dl.Posterior):
        """A diagonal Gaussian with softplus scales: another posterior through the same interface."""

        parameter_names = ("loc", "raw_scale")
        factorised = True

        def __init__(self, latent_dim, **kwargs):
            super().__init__(latent_dim, **kwargs)
            self.projection = keras.layers.Dense(2 * self.latent_dim, name="projection")

        def build(self, input_shape):
            self.projection.build(input_shape)
            self.built = True

        def parameters(self, features):
            h = self.projection(features)
            return h[..., : self.latent_dim], h[..., self.latent_dim:]

        def distribution(self, loc, raw_scale):
            return tfd.Independent(tfd.Normal(loc, tf.nn.softplus(raw_scale) + 1e-4), 1)

        def sample_and_log_prob(self, params, noise):
            q = self.distribution(*params)
            z = q.mean() + q.stddev() * noise
            return z, q.log_prob(z)

        def dimensionwise_log_prob(self, params, z):
            return tfd.Normal(params[0], tf.nn.softplus(params[1]) + 1e-4).log_prob(z)

    yield SoftplusGaussian
    dl.POSTERIORS.unregister("test_softplus_gaussian")


def test_a_registered_prior_is_a_valid_config_choice_at_once(laplace_prior):
    assert "test_laplace" in dl.PRIORS and "test_laplace" in vaezoo.get_config("vae", prior="test_laplace")["prior"]
    model = tiny("vae", prior="test_laplace")
    assert isinstance(model.prior_layer, laplace_prior)
    x = batch_for(model, n=8)
    terms = model.compute_terms(x, seed=0)  # no closed-form KL with a Laplace: Monte-Carlo
    np.testing.assert_allclose(terms["kl"], np.mean(terms["log_qz"] - terms["log_pz"], axis=0), rtol=1e-5)
    assert model.sample(3, seed=0).shape == (3, *model.data_shape)
    loaded = keras.models.load_model(_saved(model))
    assert loaded.prior == "test_laplace"


def _saved(model, path="/tmp/vaezoo_component_test.keras"):
    model.save(path)
    return path


def test_unknown_components_name_the_live_choices(laplace_prior):
    with pytest.raises(vaezoo.ConfigError, match="'prior'.*one of normal, learned_normal, mixture, .*test_laplace.*'lapl'"):
        vaezoo.get_config("vae", prior="lapl")
    with pytest.raises(vaezoo.ConfigError, match="'posterior'.*one of gaussian.*'flow'"):
        vaezoo.get("vae", posterior="flow")
    with pytest.raises(ValueError, match="Unknown likelihood 'gaus'. Did you mean 'gaussian'"):
        dl.LIKELIHOODS["gaus"]
    with pytest.raises(ValueError, match="already registered"):
        dl.register_prior("normal")(laplace_prior)


def test_component_keys_are_checked_with_the_range_the_component_declares():
    assert vaezoo.model_info("vae").schema["prior_components"].constraint == vaezoo.config.AT_LEAST_1
    with pytest.raises(vaezoo.ConfigError, match="'prior_components' of the prior 'mixture' must be >= 1, got 0"):
        dl.make_prior("mixture", 3, num_components=0)
    with pytest.raises(vaezoo.ConfigError, match="'likelihood_scale'.*> 0.*-1"):
        vaezoo.get("vae", likelihood="gaussian", likelihood_scale=-1.0)


def test_a_plugged_in_posterior_trains_and_serves_every_continuous_family(softplus_posterior):
    for name in ("vae", "iwae", "beta_tcvae", "dip_vae"):
        model = tiny(name, posterior="test_softplus_gaussian")
        x = batch_for(model, n=8)
        model.compile(keras.optimizers.Adam(1e-3))
        logs = model.fit(x, epochs=1, batch_size=8, verbose=0).history
        assert np.isfinite(logs["loss"][0]), name
        loc, raw_scale = model.encode(x)  # the structure the posterior defines
        np.testing.assert_allclose(model.code(x), loc, atol=1e-6)
        fns = model.endpoints()
        fn, _ = fns["encode"]
        assert set(fn(images=tf.constant(x))) == {"loc", "raw_scale"}
    iwae = tiny("iwae", posterior="test_softplus_gaussian")
    log_w = iwae.log_weights(batch_for(iwae, n=8), 7, seed=0)
    assert log_w.shape == (7, 8)


def test_the_gaussian_posterior_samples_as_before():
    """z = mu + sigma * eps from the posterior layer: the same draws (and pretrained numbers) as the
    hand-written sampler it replaced."""
    model = tiny("vae")
    x = batch_for(model, n=4)
    seed = tf.constant([3, 0])
    terms = model.compute_terms(x, seed=seed)
    mean, log_var = model.encode(x)
    eps = tf.random.stateless_normal([1, 4, model.latent_dim], seed)
    np.testing.assert_allclose(terms["z"], mean + tf.exp(0.5 * log_var) * eps, atol=1e-6)
    q = tfd.Independent(tfd.Normal(mean, tf.exp(0.5 * log_var)), 1)
    np.testing.assert_allclose(terms["log_qz"], q.log_prob(terms["z"]), atol=1e-4)


def test_a_posterior_on_another_support_needs_a_prior_on_it(softplus_posterior):
    softplus_posterior.support = "sphere"
    try:
        with pytest.raises(vaezoo.ConfigError, match="lives on 'sphere' but the 'normal' prior on 'real'"):
            tiny("vae", posterior="test_softplus_gaussian")
    finally:
        softplus_posterior.support = "real"


def test_bounds_of_log_weights():
    log_w = tf.constant(np.log([[1.0, 2.0], [3.0, 4.0], [8.0, 0.5]]), tf.float32)  # K = 3, B = 2
    np.testing.assert_allclose(bounds.iwae_bound(log_w), np.log([(1 + 3 + 8) / 3, (2 + 4 + 0.5) / 3]), rtol=1e-6)
    np.testing.assert_allclose(bounds.elbo(log_w), np.mean(np.log([[1, 2], [3, 4], [8, 0.5]]), axis=0), rtol=1e-6)
    assert np.all(bounds.iwae_bound(log_w) >= bounds.elbo(log_w))  # Jensen
    dynamic = tf.function(lambda w: bounds.iwae_bound(w), input_signature=[tf.TensorSpec([None, 2])])
    np.testing.assert_allclose(dynamic(log_w), bounds.iwae_bound(log_w), rtol=1e-6)
    np.testing.assert_allclose(bounds.log_weights(1.0, 2.0, 4.0, kl_weight=0.5), 1.0 + 0.5 * (2.0 - 4.0))
    assert math.isclose(float(bounds.iwae_bound(tf.zeros([1, 1]))[0]), 0.0)


def test_direct_construction_is_checked_by_the_schema():
    with pytest.raises(vaezoo.ConfigError, match="'num_samples' of model 'IWAE' must be >= 1, got 0"):
        vaezoo.IWAE(num_samples=0)
    with pytest.raises(vaezoo.ConfigError, match="'beta' of model 'BetaTCVAE' must be >= 0, got -1"):
        vaezoo.BetaTCVAE(beta=-1.0)
    with pytest.raises(vaezoo.ConfigError, match="'dip_type' of model 'DIPVAE' must be one of i, ii, got 'iii'"):
        vaezoo.DIPVAE(dip_type="iii")
    with pytest.raises(vaezoo.ConfigError, match="'gradient_estimator' of model 'VAE'.*'reinforce'"):
        vaezoo.VAE(gradient_estimator="reinforce")


def test_get_config_comes_from_the_schema_and_round_trips():
    model = tiny("beta_tcvae", beta=3.0, estimator="mws")
    config = model.get_config()
    schema = {k for k, f in vaezoo.model_info("beta_tcvae").schema.items() if not f.training}
    assert schema <= set(config)
    assert config["beta"] == 3.0 and config["estimator"] == "mws" and config["hidden_units"] == [32]
    clone = type(model).from_config(config)
    assert clone.get_config() == config


def test_a_conditional_family_gets_the_labels_through_the_hooks():
    seen = []

    class Conditional(vaezoo.VAE):
        uses_condition = True

        def compute_terms(self, x, training=False, seed=None, condition=None):
            seen.append(condition)
            terms = super().compute_terms(x, training=training, seed=seed, condition=condition)
            return terms

    model = Conditional(hidden_units=(8,), latent_dim=2)
    x = batch_for(model, n=4)
    labels = np.arange(4, dtype="int32")
    model.compile(run_eagerly=True)
    model.fit(x, labels, batch_size=4, epochs=1, verbose=0, shuffle=False)
    assert seen and np.array_equal(np.asarray(seen[-1]), labels)
    with pytest.raises(ValueError, match="models p\\(x \\| condition\\): give \\(images, labels\\) batches"):
        model.fit(x, batch_size=4, epochs=1, verbose=0)
    plain = tiny("vae")  # a family without uses_condition ignores labels, as before
    plain.compile()
    plain.fit(x, labels, batch_size=4, epochs=1, verbose=0)
    assert BaseVAE.uses_condition is False
