"""The maths: closed-form vs Monte-Carlo KL, the ELBO's parts, beta=1 == VAE, capacity, warm-up."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

import vaezoo
from vaezoo import layers as dl

from conftest import batch_for, tiny

tfd = tfp.distributions


def _posterior(batch=4, dim=3, seed=0):
    rng = np.random.default_rng(seed)
    mean = rng.normal(size=(batch, dim)).astype("float32")
    log_var = rng.normal(scale=0.5, size=(batch, dim)).astype("float32")
    return dl.DiagonalGaussianPosterior(dim).distribution(mean, log_var), mean, log_var


def test_closed_form_kl_matches_formula_and_monte_carlo():
    q, mean, log_var = _posterior()
    p = dl.StandardNormalPrior(3)()
    kl = dl.kl_divergence(q, p).numpy()
    # 0.5 * sum(mu^2 + sigma^2 - log sigma^2 - 1)  (Kingma & Welling 2014, appendix B)
    formula = 0.5 * np.sum(mean**2 + np.exp(log_var) - log_var - 1.0, axis=-1)
    np.testing.assert_allclose(kl, formula, rtol=1e-5)
    z = q.sample(200_000, seed=(1, 2))
    samples = (q.log_prob(z) - p.log_prob(z)).numpy()
    mc, se = samples.mean(0), samples.std(0) / math.sqrt(len(samples))
    assert np.all(np.abs(mc - kl) < 4 * se), (mc, kl, se)


def test_monte_carlo_fallback_for_mixture_prior():
    q, _, _ = _posterior()
    mog = dl.MixtureOfGaussiansPrior(3, num_components=1)
    mog.build()
    p = mog()
    with pytest.raises(NotImplementedError):
        tfd.kl_divergence(q, p)  # TFP has no closed form: the fallback is needed
    z = q.sample(seed=(3, 4))
    np.testing.assert_allclose(dl.kl_divergence(q, p, z), q.log_prob(z) - p.log_prob(z), rtol=1e-6)
    # A one-component mixture is one Gaussian, so the estimator's mean equals that closed form.
    gaussian = tfd.Independent(tfd.Normal(mog.locs[0], tf.nn.softplus(mog.raw_scales[0]) + 1e-5), 1)
    exact = tfd.kl_divergence(q, gaussian).numpy()
    zs = q.sample(100_000, seed=(5, 6))
    samples = dl.kl_divergence(q, p, zs).numpy()
    se = samples.std(0) / math.sqrt(len(samples))
    assert np.all(np.abs(samples.mean(0) - exact) < 4 * se)


def test_elbo_terms_are_consistent():
    model = tiny("vae")
    x = batch_for(model, n=6)
    terms = model.compute_terms(x, seed=9)
    np.testing.assert_allclose(terms["elbo"], -(terms["reconstruction"] + terms["kl"]), rtol=1e-6)
    # reconstruction is -log p(x|z) for the reparameterised z that the same seed draws
    q = model.posterior_distribution(x)
    z = q.sample(seed=model.next_seed(9))
    np.testing.assert_allclose(terms["reconstruction"], -model.likelihood_distribution(z).log_prob(x), rtol=1e-5)
    np.testing.assert_allclose(terms["kl"], dl.kl_divergence(q, model.prior_distribution()), rtol=1e-5)
    assert np.all(terms["kl"].numpy() >= 0)


def test_gradients_flow_through_the_reparameterised_sample():
    model = tiny("vae")
    x = batch_for(model, n=8)
    with tf.GradientTape() as tape:
        rec = tf.reduce_mean(model.compute_terms(x, seed=1)["reconstruction"])
    # The reconstruction term alone reaches the encoder only through z = mu + sigma * eps.
    grads = tape.gradient(rec, model.encoder.trainable_variables + model.posterior_layer.trainable_variables)
    assert all(g is not None for g in grads) and any(float(tf.reduce_max(tf.abs(g))) > 0 for g in grads)


@pytest.mark.parametrize("arch", ["vae", "vae_conv"])
def test_beta_one_is_exactly_the_vae(arch):
    vae = tiny(arch, seed=3)
    beta = tiny("beta_" + arch, beta=1.0, seed=3, latent_dim=vae.latent_dim, data_shape=list(vae.data_shape),
                conv_filters=list(vae.conv_filters))
    beta.set_weights(vae.get_weights())
    x = batch_for(vae, n=8)
    for seed in (0, 1):
        assert float(vae.objective(vae.compute_terms(x, seed=seed))) == float(beta.objective(beta.compute_terms(x, seed=seed)))
    # And one optimizer step from the same state gives the same weights.
    for m in (vae, beta):
        m.compile(keras.optimizers.SGD(0.01))
        m.fit(tf.data.Dataset.from_tensors(x), epochs=1, verbose=0)
    for a, b in zip(vae.trainable_weights, beta.trainable_weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_beta_weighs_the_kl():
    model = tiny("beta_vae", beta=4.0)
    x = batch_for(model, n=8)
    terms = model.compute_terms(x, seed=0)
    expected = tf.reduce_mean(terms["reconstruction"]) + 4.0 * tf.reduce_mean(terms["kl"])
    np.testing.assert_allclose(model.objective(terms), expected, rtol=1e-6)


def test_capacity_schedule_and_objective():
    model = tiny("beta_vae", capacity_max=20.0, capacity_steps=100, gamma=50.0)
    assert [float(model.capacity(s)) for s in (0, 25, 100, 400)] == [0.0, 5.0, 20.0, 20.0]
    x = batch_for(model, n=8)
    model.compile(keras.optimizers.Adam(1e-3))
    model.optimizer.iterations.assign(50)
    terms = model.compute_terms(x, seed=0)
    kl = float(tf.reduce_mean(terms["kl"]))
    expected = float(tf.reduce_mean(terms["reconstruction"])) + 50.0 * abs(kl - 10.0)
    np.testing.assert_allclose(float(model.objective(terms)), expected, rtol=1e-5)


def test_capacity_training_pulls_kl_towards_c():
    keras.utils.set_random_seed(0)
    model = tiny("beta_vae", capacity_max=8.0, capacity_steps=1, gamma=100.0, latent_dim=6)
    x = batch_for(model, n=64)
    model.compile(keras.optimizers.Adam(3e-3))
    model.fit(tf.data.Dataset.from_tensors(x).repeat(150), epochs=1, verbose=0)
    kl = float(tf.reduce_mean(model.compute_terms(x, seed=0)["kl"]))
    assert abs(kl - 8.0) < 2.0, kl


@pytest.mark.parametrize("name", [pytest.param(n, marks=() if n in ("vae", "vq_vae", "pixelcnn_prior") else pytest.mark.slow)
                                  for n in vaezoo.list_models()])
def test_kl_warmup_callback_anneals_and_works_for_every_model(name):
    # One model of each kind by default (the schedule lives in BaseVAE.train_step); all in the slow suite.
    seen = []

    class Record(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            seen.append(float(self.model.kl_weight.numpy()))

    model = tiny(name)
    x = batch_for(model, n=8)
    model.compile(keras.optimizers.Adam(1e-3), steps_per_execution=1)
    model.fit(tf.data.Dataset.from_tensors(x).repeat(6), epochs=1, verbose=0,
              callbacks=[vaezoo.callbacks.KLWarmup(warmup_steps=4), Record()])
    assert seen == pytest.approx([0.0, 0.25, 0.5, 0.75, 1.0, 1.0])


def test_kl_warmup_is_applied_inside_each_step_with_steps_per_execution():
    # Three steps run in one call into TensorFlow: the callback sees one batch end, after the
    # weight of step 2 (0-based) was applied in the graph, not the weight it set before the call.
    seen = []

    class Record(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            seen.append(float(self.model.kl_weight.numpy()))

    model = tiny("vae")
    model.compile(keras.optimizers.Adam(1e-3))  # steps_per_execution=32 by default
    x = batch_for(model, n=8)
    model.fit(tf.data.Dataset.from_tensors(x).repeat(3), epochs=1, verbose=0,
              callbacks=[vaezoo.callbacks.KLWarmup(warmup_steps=4), Record()])
    assert seen == pytest.approx([0.5])
    assert float(model.kl_weight.numpy()) == pytest.approx(0.75)  # after training: the weight reached
    assert float(model.kl_warmup_steps.numpy()) == 0.0  # a later fit without the callback does not anneal


def test_kl_weight_zero_removes_the_kl_from_the_objective():
    model = tiny("beta_vae", beta=4.0)
    x = batch_for(model, n=8)
    model.kl_weight.assign(0.0)
    terms = model.compute_terms(x, seed=0)
    np.testing.assert_allclose(model.objective(terms), tf.reduce_mean(terms["reconstruction"]), rtol=1e-6)
