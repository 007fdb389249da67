"""Hierarchical VAEs (vaezoo.models.hierarchical): on a linear-Gaussian two-layer model with closed-form
log p(x), ELBO <= IWAE-K <= exact and the 5000-sample estimate within 0.05 nats (bottom-up inference set near
the exact posteriors); the ladder's bounds are ordered too; precision-weighted merging is the product of
Gaussians; the per-layer KL terms add up; the public API and the export signatures' structure."""

import math

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

import vaezoo
from vaezoo import evaluate
from vaezoo.models.hierarchical import precision_weighted

D_X, D1, D2, SIGMA = 4, 3, 2, 0.5


def linear_two_layer(inference="bottom_up", offset=0.5, seed=0):
    """z2 ~ N(0, I), z1 | z2 ~ N(A z2 + a, S1), x | z1 ~ N(B z1 + b, sigma^2 I): p(x) is Gaussian. With
    bottom-up inference q(z1|x) and q(z2|z1) are set to the exact conditionals' means and their variances'
    diagonals inflated by exp(offset). Returns the model and the exact log p(x)."""
    rng = np.random.default_rng(seed)
    model = vaezoo.get("vae_2layer", data_shape=[D_X], latent_dims=[D1, D2], hidden_units=[[], []],
                       likelihood="gaussian", likelihood_scale=SIGMA, inference=inference, seed=seed)
    A, a = rng.normal(size=(D1, D2)), rng.normal(size=D1)
    log_s1 = np.log(rng.uniform(0.3, 0.8, size=D1) ** 2)
    B, b = rng.normal(size=(D_X, D1)), rng.normal(size=D_X)
    model.down_heads[0].set_weights([np.concatenate([A.T, np.zeros((D2, D1))], 1).astype("float32"),
                                     np.concatenate([a, log_s1]).astype("float32")])
    model.decoder.layers[-2].set_weights([B.T.astype("float32"), b.astype("float32")])
    S1 = np.diag(np.exp(log_s1))
    cov1 = A @ A.T + S1
    if inference == "bottom_up":
        P1 = np.linalg.inv(np.linalg.inv(cov1) + B.T @ B / SIGMA**2)  # p(z1 | x)
        G = P1 @ B.T / SIGMA**2
        g = P1 @ np.linalg.inv(cov1) @ a - G @ b
        model.up_heads[0].set_weights([np.concatenate([G.T, np.zeros((D_X, D1))], 1).astype("float32"),
                                       np.concatenate([g, np.log(np.diag(P1)) + offset]).astype("float32")])
        P2 = np.linalg.inv(np.eye(D2) + A.T @ np.linalg.inv(S1) @ A)  # p(z2 | z1)
        H = P2 @ A.T @ np.linalg.inv(S1)
        model.up_heads[1].set_weights([np.concatenate([H.T, np.zeros((D1, D2))], 1).astype("float32"),
                                       np.concatenate([-H @ a, np.log(np.diag(P2)) + offset]).astype("float32")])
    marginal = tfp.distributions.MultivariateNormalFullCovariance(B @ a + b, B @ cov1 @ B.T + SIGMA**2 * np.eye(D_X))
    x = marginal.sample(16, seed=(3, 4)).numpy().astype("float32")
    return model, x, marginal.log_prob(x.astype("float64")).numpy()


def _mean_bound(model, x, k, reps=200, seed=5):
    values = np.stack([tf.reduce_logsumexp(model.log_weights(x, k, seed=(seed, r)), 0).numpy() - math.log(k)
                       for r in range(reps)]).mean(1)
    return values.mean(), values.std(ddof=1) / math.sqrt(reps)


def test_two_layer_bounds_are_ordered_and_the_estimate_is_exact():
    model, x, exact = linear_two_layer()
    exact = exact.mean()
    elbo, elbo_se = _mean_bound(model, x, 1)
    iwae, iwae_se = _mean_bound(model, x, 10)
    assert elbo + 3 * elbo_se < iwae < exact + 3 * iwae_se, (elbo, iwae, exact)
    assert exact - elbo > 0.05  # a gap the test can see
    estimate = evaluate.log_likelihood(model, x, num_samples=5000, batch_size=16, seed=0)
    assert abs(-estimate.nll - exact) < 0.05, (-estimate.nll, exact)
    # The model's own ELBO is the mean log-weight, and its KL the sum of the per-layer terms.
    terms = model.compute_terms(x, seed=tf.constant([1, 1]))
    np.testing.assert_allclose(terms["elbo"], tf.reduce_mean(terms["log_w"], 0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(terms["kl"], terms["kl_1"] + terms["kl_2"], rtol=1e-6, atol=1e-6)


def test_ladder_bounds_are_ordered_below_the_exact_log_likelihood():
    model, x, exact = linear_two_layer(inference="top_down")
    exact = exact.mean()
    elbo, elbo_se = _mean_bound(model, x, 1)
    iwae, iwae_se = _mean_bound(model, x, 20)
    assert elbo + 3 * elbo_se < iwae < exact, (elbo, iwae, exact)


def test_precision_weighting_is_the_normalised_product_of_the_gaussians():
    rng = np.random.default_rng(0)
    m1, m2 = rng.normal(size=(2, 5)).astype("float32")
    v1, v2 = rng.normal(size=(2, 5)).astype("float32")
    mean, log_var = precision_weighted(m1, v1, m2, v2)
    grid = np.linspace(-8, 8, 40001)
    for i in range(5):
        density = np.exp(-0.5 * (grid - m1[i]) ** 2 / np.exp(v1[i]) - 0.5 * (grid - m2[i]) ** 2 / np.exp(v2[i]))
        density /= density.sum()
        np.testing.assert_allclose(mean[i], (grid * density).sum(), atol=1e-4)
        np.testing.assert_allclose(np.exp(log_var[i]), (grid**2 * density).sum() - (grid * density).sum() ** 2,
                                   rtol=1e-3)


@pytest.mark.parametrize("name", ["vae_2layer", "iwae_2layer", "ladder_vae"])
def test_hierarchical_api_shapes_and_signatures(name):
    model = vaezoo.get(name, latent_dims=[6, 4, 2], hidden_units=[[16], [8], [8]], seed=0)
    x = (np.random.default_rng(0).uniform(size=(5, 28, 28, 1)) > 0.5).astype("float32")
    params = model.encode(x)
    assert model.parameter_names == ("mean", "log_variance", "mean_1", "log_variance_1", "mean_2", "log_variance_2",
                                     "mean_3", "log_variance_3")
    assert [tuple(p.shape) for p in params] == [(5, 2), (5, 2), (5, 6), (5, 6), (5, 4), (5, 4), (5, 2), (5, 2)]
    np.testing.assert_array_equal(params[0], params[6])  # the top layer's statistics come first
    assert model.code(x).shape == (5, 2) and model.decode(model.code(x)).shape == x.shape
    assert model.sample(3, seed=1).shape == (3, 28, 28, 1)
    noise = {k: np.zeros((2, *s), "float32") for k, s in model.noise_shapes().items()}
    assert set(noise) == {"noise", "noise_1", "noise_2"}
    np.testing.assert_allclose(model.sample_from_noise(**noise), model.decode(np.zeros((2, 2), "float32")), atol=1e-6)
    terms = model.compute_terms(x, seed=3)
    assert {"kl_1", "kl_2", "kl_3"} <= set(terms) and set(model.metric_names) <= set(terms)
    assert model.log_weights(x, 4, seed=(1, 2)).shape == (4, 5)
    with pytest.raises(ValueError, match="latent_dim=2"):
        model.decode(np.zeros((2, 6), "float32"))


def test_hidden_units_must_match_the_layers():
    with pytest.raises(vaezoo.ConfigError, match="one list of widths"):
        vaezoo.get("vae_2layer", latent_dims=[10, 5, 2], hidden_units=[[20], [10]])


def test_warm_up_steps_schedule_the_kl_weight_inside_the_step():
    model = vaezoo.get("ladder_vae", latent_dims=[4, 2], hidden_units=[[16], [8]], warmup_steps=10, seed=0)
    import keras
    model.compile(keras.optimizers.Adam(1e-3), steps_per_execution=1)
    x = (np.random.default_rng(0).uniform(size=(8, 28, 28, 1)) > 0.5).astype("float32")
    model.fit(x, batch_size=8, epochs=5, verbose=0)
    np.testing.assert_allclose(float(model.kl_weight), 0.4, atol=1e-6)  # step 4 of 10 (set before each step)


def test_ladder_with_a_vamp_prior_mixes_the_top_posteriors_and_exports(tmp_path):
    model = vaezoo.get("ladder_vae", latent_dims=[6, 3], hidden_units=[[16], [8]], prior="vamp", num_pseudo_inputs=5,
                       seed=0)
    pseudo = model.prior_layer.pseudo_input_values()
    mean, log_var = (t.numpy().astype("float64") for t in model._bottom_up_estimates(pseudo)[-1])
    z = np.random.default_rng(1).normal(size=(4, 3))
    sd = np.exp(0.5 * log_var)
    log_components = (-0.5 * ((z[:, None] - mean[None]) / sd[None]) ** 2 - np.log(sd[None])
                      - 0.5 * np.log(2 * np.pi)).sum(-1)
    expected = np.logaddexp.reduce(log_components, axis=1) - np.log(5)
    np.testing.assert_allclose(model.prior_layer.log_prob(z.astype("float32")), expected, atol=1e-4)
    # The top layer's prior term in the bound is that mixture at the sampled z_L.
    x = (np.random.default_rng(0).uniform(size=(4, 28, 28, 1)) > 0.5).astype("float32")
    log_px, log_p, log_q, zs, _ = model.layer_log_probs(x, 2, seed=tf.constant([1, 2]))
    np.testing.assert_allclose(log_p[-1], model.prior_layer.log_prob(zs[-1]), rtol=1e-6)
    # TFLite: the ancestral sampler from noise, the component picked by the uniform noise.
    from ai_edge_litert.interpreter import Interpreter
    from vaezoo import export
    path = export.tflite(model, tmp_path / "m.tflite", signatures=["sample_from_noise"])
    runner = Interpreter(model_path=str(path)).get_signature_runner("sample_from_noise")
    rng = np.random.default_rng(2)
    noise = {"noise": rng.normal(size=(3, 3)), "component_noise": rng.uniform(size=3), "noise_1": rng.normal(size=(3, 6))}
    noise = {k: v.astype("float32") for k, v in noise.items()}
    np.testing.assert_allclose(runner(**noise)["images"], model.sample_from_noise(**noise), atol=1e-5)


def test_the_vamp_prior_needs_top_down_inference():
    with pytest.raises(vaezoo.ConfigError, match="inference='top_down'"):
        vaezoo.get("vae_2layer", prior="vamp")
