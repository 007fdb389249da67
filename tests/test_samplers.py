"""Ex-post samplers (vaezoo.samplers): EM against a known mixture, the sampler's moments, fitting to a model's
codes, save/load, export, and the errors."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

import vaezoo
from vaezoo import data, samplers


def known_mixture(n=6000, seed=0):
    rng = np.random.default_rng(seed)
    weights = np.array([0.3, 0.7])
    means = np.array([[-3.0, 0.0, 1.0], [2.0, 1.0, -1.0]])
    covs = np.array([[[1.0, 0.5, 0.0], [0.5, 1.0, 0.2], [0.0, 0.2, 0.5]], np.diag([0.3, 2.0, 1.0])])
    k = rng.choice(2, n, p=weights)
    x = np.stack([rng.multivariate_normal(means[i], covs[i]) for i in k])
    return x, weights, means, covs


def tiny_model(**overrides):
    keras.utils.set_random_seed(0)
    return vaezoo.get("vae", **{"data_shape": [32, 32, 1], "latent_dim": 3, "hidden_units": [16], **overrides})


def sprites(n=600):
    images, _ = data.sprites_arrays("test")
    return np.asarray(images[:n])


def test_em_recovers_a_known_mixture():
    x, weights, means, covs = known_mixture()
    w, m, c, iterations = samplers.fit_gmm(x, 2, seed=0)
    order = np.argsort(m[:, 0])  # components in the order of the truth
    assert np.allclose(w[order], weights, atol=0.02)
    assert np.allclose(m[order], means, atol=0.08)
    assert np.allclose(c[order], covs, atol=0.12)
    assert iterations < 200
    # EM's fixed point is at least as likely as the truth on the data it saw.
    assert samplers.gmm_log_prob(x, w, m, c).mean() >= samplers.gmm_log_prob(x, weights, means, covs).mean() - 1e-9


def test_the_sampler_layer_has_the_mixture_density_and_moments():
    _, weights, means, covs = known_mixture()
    layer = samplers.GaussianMixtureSampler(3, 2)
    layer.build()
    layer.set_parameters(weights, means, covs)
    z = np.random.default_rng(1).normal(size=(50, 3))
    assert np.allclose(layer.log_prob(tf.constant(z, tf.float32)), samplers.gmm_log_prob(z, weights, means, covs),
                       atol=1e-4)
    drawn = np.asarray(layer.from_noise(**layer.draw_noise(40_000, tf.constant([3, 4]))))
    mean = weights @ means
    second = sum(w * (c + np.outer(m, m)) for w, m, c in zip(weights, means, covs))
    assert np.allclose(drawn.mean(0), mean, atol=0.05)
    assert np.allclose(np.cov(drawn, rowvar=False), second - np.outer(mean, mean), atol=0.12)


@pytest.mark.parametrize("kind", samplers.KINDS)
def test_fit_sampler_fits_the_codes_better_than_the_prior_and_samples(kind):
    model = tiny_model()
    fit = samplers.fit_sampler(model, sprites(), kind, num_components=3, epochs=30, hidden_units=[16], seed=0)
    assert (fit.kind, fit.num_codes) == (kind, 600) and (fit.iterations is not None) == (kind == "gmm")
    codes = samplers.posterior_codes(model, sprites()[540:])  # the held-out tenth
    prior = float(np.mean(model.prior_layer.log_prob(tf.constant(codes))))
    assert fit.validation_log_prob > prior + 1.0, (fit, prior)  # an untrained encoder's codes are not N(0, I)
    images = model.sample(8, seed=0, sampler=kind)
    assert images.shape == (8, 32, 32, 1)
    assert np.allclose(images, model.sample(8, seed=0, sampler=kind))  # seeded
    assert not np.allclose(images, model.sample(8, seed=0))  # not the prior's


@pytest.mark.parametrize("kind", samplers.KINDS)
def test_a_fitted_sampler_is_saved_and_reloaded(kind, tmp_path):
    model = tiny_model()
    samplers.fit_sampler(model, sprites(300), kind, num_components=2, epochs=2, hidden_units=[8])
    assert model.get_config()["ex_post_sampler"]["kind"] == kind
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert loaded.ex_post_sampler_kind == kind
    assert np.allclose(loaded.sample(6, seed=1, sampler=kind), model.sample(6, seed=1, sampler=kind), atol=1e-6)
    fresh = tiny_model()
    assert "ex_post_sampler" not in fresh.get_config()


def test_a_gmm_sampler_is_exported_to_saved_model_and_tflite(tmp_path):
    model = tiny_model()
    samplers.fit_sampler(model, sprites(300), "gmm", num_components=2)
    noise = {"noise": np.random.default_rng(0).normal(size=(4, 3)).astype("float32"),
             "component_noise": np.array([0.1, 0.4, 0.6, 0.95], "float32")}
    expected = np.asarray(model.decode(model.ex_post_sampler.from_noise(**noise)))
    saved = vaezoo.export.saved_model(model, tmp_path / "sm", version=1, name="vae")
    lite = vaezoo.export.tflite(model, tmp_path / "vae.tflite", signatures=["sample_from_noise_ex_post"])
    for path in (saved, lite):
        exported = vaezoo.load_exported(path)
        assert "sample_from_noise_ex_post" in exported.signatures
        assert np.allclose(exported("sample_from_noise_ex_post", **noise)["images"], expected, atol=1e-5)
    assert vaezoo.load_exported(saved)("sample_ex_post", n=np.int32(5))["images"].shape == (5, 32, 32, 1)


def test_sampler_errors_name_the_problem():
    model = tiny_model()
    with pytest.raises(samplers.SamplerError, match="no fitted 'gmm' sampler.*fit_sampler"):
        model.sample(2, sampler="gmm")
    with pytest.raises(samplers.SamplerError, match="Unknown sampler 'gaussian'; valid choices: prior, gmm, flow"):
        model.sample(2, sampler="gaussian")
    with pytest.raises(samplers.SamplerError, match="Unknown ex-post sampler 'kde'; valid choices: gmm, flow"):
        samplers.fit_sampler(model, sprites(50), "kde")
    with pytest.raises(samplers.SamplerError, match="needs at least 20 codes; got 9"):
        samplers.fit_sampler(model, sprites(10), "gmm", num_components=10)
    samplers.fit_sampler(model, sprites(100), "gmm", num_components=2)
    with pytest.raises(samplers.SamplerError, match="no fitted 'flow' sampler \\(it has a 'gmm' one\\)"):
        model.sample(2, sampler="flow")
    cvae = vaezoo.get("cvae", data_shape=[32, 32, 1], latent_dim=3, hidden_units=[16], num_classes=3)
    with pytest.raises(samplers.SamplerError, match="CVAE does not have one \\(it is conditional"):
        samplers.fit_sampler(cvae, sprites(50), "gmm")
    sphere = vaezoo.get("hyperspherical_vae", data_shape=[32, 32, 1], latent_dim=3, hidden_units=[16])
    with pytest.raises(samplers.SamplerError, match="codes live on 'sphere'"):
        samplers.fit_sampler(sphere, sprites(50), "gmm")


def test_bayesian_vae_samples_from_its_ex_post_sampler():
    model = vaezoo.get("bayesian_vae", data_shape=[32, 32, 1], latent_dim=3, hidden_units=[16], dataset_size=600)
    samplers.fit_sampler(model, sprites(200), "gmm", num_components=2)
    drawn = model.sample(4, seed=0, sampler="gmm", weights="mean")
    z = model.ex_post_sampler.from_noise(**model.ex_post_sampler.draw_noise(4, tf.constant([0, 0])))
    assert np.allclose(drawn, model.decode(z), atol=1e-5)  # z from the mixture, the posterior-mean decoder
