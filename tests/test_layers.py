"""Distribution layers: formulas, serialization round trips, use outside vaezoo's models."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

from vaezoo import layers as dl

from conftest import batch_for, tiny

tfd = tfp.distributions


def _built(layer):
    if layer.built:  # deserialize() already builds from the saved build config
        return layer
    if isinstance(layer, dl.DiagonalGaussianPosterior):
        layer.build((None, 6))
    elif isinstance(layer, dl._Prior):
        layer.build()
    else:
        layer.build((None, 4, 4, 1))
    return layer


LAYERS = [
    lambda: dl.DiagonalGaussianPosterior(3),
    lambda: dl.StandardNormalPrior(3),
    lambda: dl.LearnedGaussianPrior(3),
    lambda: dl.MixtureOfGaussiansPrior(3, num_components=4, seed=1),
    lambda: dl.BernoulliLikelihood(),
    lambda: dl.ContinuousBernoulliLikelihood(),
    lambda: dl.GaussianLikelihood(scale=0.3),
    lambda: dl.LearnedScaleGaussianLikelihood(scale=0.5),
]


def _input_for(layer):
    if isinstance(layer, dl.DiagonalGaussianPosterior):
        return np.random.default_rng(0).normal(size=(2, 6)).astype("float32")
    if isinstance(layer, dl._Prior):
        return None
    return np.random.default_rng(0).uniform(size=(2, 4, 4, 1)).astype("float32")


@pytest.mark.parametrize("make", LAYERS, ids=lambda f: type(f()).__name__)
def test_layer_serialization_round_trip(make):
    layer = _built(make())
    clone = _built(keras.layers.deserialize(keras.layers.serialize(layer)))
    assert type(clone) is type(layer) and clone.get_config() == layer.get_config()
    clone.set_weights(layer.get_weights())
    inputs = _input_for(layer)
    d1, d2 = (layer(inputs), clone(inputs)) if inputs is not None else (layer(), clone())
    assert isinstance(d1, tfd.Distribution)
    point = d1.sample(seed=(1, 2))
    np.testing.assert_allclose(d1.log_prob(point), d2.log_prob(point), rtol=1e-6)


def test_fixed_gaussian_is_the_standard_instance():
    """log N(x; mu, sigma^2 I) = -||x - mu||^2 / (2 sigma^2) - D log sigma - D/2 log 2 pi."""
    layer = _built(dl.GaussianLikelihood(scale=0.3))
    mu = np.random.default_rng(1).uniform(size=(2, 4, 4, 1)).astype("float32")
    x = np.random.default_rng(2).uniform(size=(2, 4, 4, 1)).astype("float32")
    d = 16
    expected = -((x - mu) ** 2).sum((1, 2, 3)) / (2 * 0.3**2) - d * math.log(0.3) - d / 2 * math.log(2 * math.pi)
    np.testing.assert_allclose(layer(mu).log_prob(x), expected, rtol=1e-5)


def test_bernoulli_log_prob_is_binary_cross_entropy():
    layer = _built(dl.BernoulliLikelihood())
    logits = np.random.default_rng(1).normal(size=(2, 4, 4, 1)).astype("float32")
    x = (np.random.default_rng(2).uniform(size=(2, 4, 4, 1)) > 0.5).astype("float32")
    p = 1 / (1 + np.exp(-logits))
    expected = (x * np.log(p) + (1 - x) * np.log(1 - p)).sum((1, 2, 3))
    np.testing.assert_allclose(layer(logits).log_prob(x), expected, rtol=1e-4)


def test_continuous_bernoulli_is_normalised():
    layer = _built(dl.ContinuousBernoulliLikelihood())
    logits = tf.constant([[-3.0], [0.0], [2.5]])  # three 1-d examples
    layer.build((None, 1))
    grid = np.linspace(0.0005, 0.9995, 1000, dtype="float32")[:, None, None]  # [1000, 1, 1] against [3, 1]
    density = np.exp(layer(logits).log_prob(grid).numpy())
    np.testing.assert_allclose(density.mean(0), 1.0, atol=2e-3)  # integral over [0, 1]


def test_sample_dimensions_pass_through_as_batch():
    layer = _built(dl.BernoulliLikelihood())
    d = layer(tf.zeros([5, 2, 4, 4, 1]))  # [K, B, H, W, C] as IWAE will need
    assert d.batch_shape == (5, 2) and d.event_shape == (4, 4, 1)


def test_mixture_prior_is_learnable_outside_vaezoo_models():
    """Fit a mixture prior to two clusters with a plain GradientTape loop and a Keras optimizer."""
    rng = np.random.default_rng(0)
    data = np.concatenate([rng.normal(-3, 0.5, (500, 2)), rng.normal(3, 0.5, (500, 2))]).astype("float32")
    prior = dl.MixtureOfGaussiansPrior(2, num_components=2, seed=0)
    prior.build()
    opt = keras.optimizers.Adam(0.05)
    nll_before = -float(tf.reduce_mean(prior().log_prob(data)))
    for _ in range(300):
        with tf.GradientTape() as tape:
            nll = -tf.reduce_mean(prior().log_prob(data))
        opt.apply(tape.gradient(nll, prior.trainable_variables), prior.trainable_variables)
    assert float(nll) < nll_before - 1.0
    locs = np.sort(prior.locs.numpy()[:, 0])
    np.testing.assert_allclose(locs, [-3, 3], atol=0.3)


def test_layers_compose_in_a_plain_keras_model():
    """A user's own Keras 3 model with add_loss, no vaezoo model class involved."""

    class TinyDecoder(keras.Model):
        def __init__(self):
            super().__init__()
            self.net = keras.layers.Dense(4)
            self.likelihood = dl.GaussianLikelihood(scale=1.0)

        def call(self, z):
            params = self.net(z)
            self.add_loss(-tf.reduce_mean(self.likelihood(params).log_prob(tf.ones_like(params))))
            return params

    model = TinyDecoder()
    model.compile(keras.optimizers.Adam(0.1))
    z = np.random.default_rng(0).normal(size=(64, 3)).astype("float32")
    history = model.fit(z, np.zeros((64, 4), "float32"), epochs=20, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]


# Each prior goes into a model whose posterior lives on the prior's support: the VAE's Gaussian
# posterior for priors on the reals, the categorical VAE's Concrete posterior for priors on the simplex,
# the S-VAE's von Mises-Fisher posterior for priors on the sphere.
_MODEL_FOR_SUPPORT = {"real": "vae", "simplex": "categorical_vae", "sphere": "hyperspherical_vae"}


# The components are independent of each other (the likelihood sees only z's decoding, the prior only z), so
# every prior is tried with the Bernoulli likelihood and every likelihood with the normal prior, not the grid.
_PAIRS = sorted({(p, "bernoulli") for p in dl.PRIORS} | {("normal", lik) for lik in dl.LIKELIHOODS})


@pytest.mark.parametrize("prior, likelihood", _PAIRS)
def test_every_likelihood_and_prior_in_a_model(likelihood, prior, tmp_path):
    model = tiny(_MODEL_FOR_SUPPORT[dl.PRIORS[prior].support], likelihood=likelihood, prior=prior, likelihood_scale=0.5)
    x = batch_for(model, n=8) * 0.9 + 0.05  # inside (0, 1) for every likelihood
    model.compile(keras.optimizers.Adam(1e-3))
    history = model.fit(tf.data.Dataset.from_tensors(x).repeat(2), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][-1])
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(loaded.elbo(x, seed=1), model.elbo(x, seed=1), rtol=1e-6)
    assert type(loaded.prior_layer) is dl.PRIORS[prior]
    assert type(loaded.likelihood_layer) is dl.LIKELIHOODS[likelihood]


def test_categorical_from_uniform_noise_has_the_categorical_law():
    logits = tf.math.log(tf.constant([[0.1, 0.6, 0.3]]))
    u = tf.random.stateless_uniform([20000], seed=[4, 2])
    drawn = dl.categorical_from_uniform(tf.repeat(logits, 20000, axis=0), u).numpy()
    freq = np.bincount(drawn, minlength=3) / drawn.size
    np.testing.assert_allclose(freq, [0.1, 0.6, 0.3], atol=0.012)  # > 3.5 standard errors of 0.0035
    edges = dl.categorical_from_uniform(tf.repeat(logits, 4, axis=0), tf.constant([0.0, 0.0999, 0.1001, 0.99999]))
    np.testing.assert_array_equal(edges, [0, 0, 1, 2])


@pytest.mark.parametrize("kind", ["normal", "learned_normal", "mixture"])
def test_priors_sample_from_noise_with_their_own_law(kind):
    """z = from_noise(draw_noise(n)) has the prior's mean and standard deviation (20,000 draws)."""
    keras.utils.set_random_seed(0)
    prior = dl.make_prior(kind, latent_dim=3, num_components=4, seed=1)
    prior.build()
    if kind == "learned_normal":
        prior.loc.assign([1.0, -2.0, 0.5])
        prior.raw_scale.assign(np.log([0.5, 2.0, 1.0]))
    if kind == "mixture":
        prior.logits.assign([0.0, 1.0, -1.0, 2.0])
    noise = prior.draw_noise(20000, seed=tf.constant([5, 6]))
    assert set(noise) == set(prior.noise_shapes())
    z = prior.from_noise(**noise).numpy()
    p = prior()
    mean, std = p.mean().numpy(), np.sqrt(p.variance().numpy())
    np.testing.assert_allclose(z.mean(0), mean, atol=5 * std.max() / np.sqrt(20000))
    np.testing.assert_allclose(z.std(0), std, rtol=0.03)
    again = prior.from_noise(**prior.draw_noise(20000, seed=tf.constant([5, 6]))).numpy()
    np.testing.assert_array_equal(z, again)  # a deterministic function of seeded noise
