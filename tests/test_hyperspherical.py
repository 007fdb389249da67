"""hyperspherical_vae: the bounded Wood sampler against the vMF law, its corrected kappa-gradient against a
finite difference of the exact mean, TFP's log_prob and KL against their closed forms (scipy, float64)."""

import math

import numpy as np
import pytest
import scipy.integrate
import scipy.special
import scipy.stats
import tensorflow as tf

import vaezoo
from vaezoo.models.hyperspherical import SphericalUniformPrior, VonMisesFisherPosterior

DIMENSIONS = (3, 10, 20)


def mean_length(m, kappa):
    """A_m(kappa) = I_{m/2}(kappa) / I_{m/2-1}(kappa): E[z] = A_m(kappa) mu."""
    return scipy.special.ive(m / 2, kappa) / scipy.special.ive(m / 2 - 1, kappa)


def log_normalizer(m, kappa):
    """log C_m(kappa) in float64 (scipy's exponentially scaled Bessel function)."""
    v = m / 2 - 1
    return v * math.log(kappa) - m / 2 * math.log(2 * math.pi) - (math.log(scipy.special.ive(v, kappa)) + kappa)


def closed_form_kl(m, kappa):
    """KL(vMF(mu, kappa) || U(S^(m-1))), Davidson et al. 2018, eq. 8-9."""
    log_area = math.log(2) + m / 2 * math.log(math.pi) - math.lgamma(m / 2)
    return kappa * mean_length(m, kappa) + log_normalizer(m, kappa) + log_area


def direction(m):
    mu = np.zeros(m)
    mu[1], mu[2] = 0.6, 0.8
    return mu


def sample(m, kappa, n, seed=(3, 4)):
    layer = VonMisesFisherPosterior(m)
    params = (tf.constant(direction(m)[None], tf.float32), tf.constant([kappa], tf.float32))
    z, log_q = layer.sample_and_log_prob(params, layer.draw_noise(n, 1, tf.constant(seed)))
    return layer, params, z.numpy()[:, 0].astype("float64"), log_q.numpy()[:, 0]


@pytest.mark.parametrize("m", DIMENSIONS)
@pytest.mark.parametrize("kappa", [1.0, 20.0, 200.0])
def test_samples_follow_the_von_mises_fisher_law(m, kappa):
    _, _, z, _ = sample(m, kappa, 4000)
    mu = direction(m)
    np.testing.assert_allclose(np.linalg.norm(z, axis=1), 1.0, atol=1e-5)
    w = z @ mu
    # w = mu^T z has density proportional to exp(kappa w) (1 - w^2)^((m-3)/2) on [-1, 1]; integrated in
    # s = 1 - w (density exp(-kappa s) (s (2 - s))^((m-3)/2) on [0, 2]), where the mass sits near 0.
    density = lambda t: math.exp(-kappa * t) * (t * (2 - t)) ** ((m - 3) / 2)
    total = scipy.integrate.quad(density, 0, 2, points=[1 / kappa, 10 / kappa], limit=200)[0]
    cdf = lambda t: scipy.integrate.quad(density, 0, min(max(t, 0), 2), limit=200)[0] / total
    assert scipy.stats.kstest(1 - w, np.vectorize(cdf)).pvalue > 1e-3
    # The moments: E[z] = A_m(kappa) mu, E[w^2] = 1 - (m-1) A_m(kappa) / kappa; the part orthogonal to mu is
    # isotropic (zero mean, equal spread in every orthogonal direction).
    se = z.std(0) / math.sqrt(len(z)) + 1e-12
    assert np.all(np.abs(z.mean(0) - mean_length(m, kappa) * mu) < 5 * se)
    assert abs(np.mean(w ** 2) - (1 - (m - 1) * mean_length(m, kappa) / kappa)) < 5 * np.std(w ** 2) / math.sqrt(len(w))
    orthogonal = z - w[:, None] * mu
    spread = (orthogonal ** 2).mean(0)[[0, 3]] if m > 3 else (orthogonal ** 2).mean(0)[[0]]
    np.testing.assert_allclose(spread, (1 - np.mean(w ** 2)) / (m - 1), rtol=0.15)


@pytest.mark.parametrize("m", DIMENSIONS)
def test_log_prob_and_kl_are_the_closed_forms_and_the_kl_its_monte_carlo_value(m):
    for kappa in (0.5, 5.0, 50.0, 500.0):
        layer, params, z, log_q = sample(m, kappa, 5000)
        expected = log_normalizer(m, kappa) + kappa * (z[:50] @ direction(m))
        np.testing.assert_allclose(log_q[:50], expected, rtol=1e-4, atol=1e-3)
        prior = SphericalUniformPrior(m)()
        kl = float(vaezoo.layers.analytic_kl(layer.distribution(*params), prior)[0])
        np.testing.assert_allclose(kl, closed_form_kl(m, kappa), rtol=1e-4, atol=1e-4)
        samples = log_q - prior.log_prob(z.astype("float32")).numpy()
        assert abs(samples.mean() - kl) < 5 * samples.std() / math.sqrt(len(samples)) + 1e-4


@pytest.mark.parametrize("m", DIMENSIONS)
@pytest.mark.parametrize("kappa", [1.0, 5.0, 50.0])
def test_the_corrected_kappa_gradient_matches_a_finite_difference_of_the_exact_mean(m, kappa):
    """d/dkappa E[a^T z] = A_m'(kappa) a^T mu. With the correction term (g_rep + g_cor) the estimator is
    unbiased; the reparameterised part alone (g_rep) is not, and at small kappa the test sees it."""
    layer = VonMisesFisherPosterior(m)
    replicas, samples = 20, 2000
    mu = tf.constant(np.tile(direction(m), (replicas, 1)), tf.float32)
    concentration = tf.Variable(np.full(replicas, kappa, "float32"))
    a = tf.constant(np.linspace(-1, 1, m)[None, None], tf.float32)
    noise = layer.draw_noise(samples, replicas, tf.constant([5, 6]))
    with tf.GradientTape(persistent=True) as tape:
        z, _ = layer.sample_and_log_prob((mu, concentration), noise)
        f = tf.reduce_sum(a * z, -1)  # [K, replicas]
        c = layer.score_correction((mu, concentration), noise)
        reparameterised = tf.reduce_sum(tf.reduce_mean(f, 0))
        corrected = reparameterised + tf.reduce_sum(tf.reduce_mean(tf.stop_gradient(f) * (c - tf.stop_gradient(c)), 0))
    g_full = tape.gradient(corrected, concentration).numpy()  # one estimate per replica
    g_rep = tape.gradient(reparameterised, concentration).numpy()
    h = 1e-4 * kappa
    exact = (mean_length(m, kappa + h) - mean_length(m, kappa - h)) / (2 * h) * float(np.dot(np.linspace(-1, 1, m),
                                                                                            direction(m)))
    se = g_full.std() / math.sqrt(replicas)
    assert abs(g_full.mean() - exact) < 4 * se + 1e-3 * abs(exact), (g_full.mean(), exact, se)
    if m == 3 and kappa == 1.0:  # negative control: without g_cor the gradient is ~20% low here
        assert abs(g_rep.mean() - exact) > 10 * g_rep.std() / math.sqrt(replicas)


def test_the_bounded_sampler_rarely_runs_out_of_proposals():
    for m in (2, 3, 10, 20, 100):
        rate = VonMisesFisherPosterior(m).acceptance_rate(tf.constant([0.1, 1.0, 10.0, 100.0, 1e4]), 4000).numpy()
        assert np.all(rate > 0.5), (m, rate)  # so 20 proposals all fail with probability < 1e-6


def test_the_model_adds_the_correction_to_its_bound_and_encodes_on_the_sphere():
    model = vaezoo.get("hyperspherical_vae", latent_dim=5, hidden_units=[16], seed=0)
    x = (np.random.default_rng(0).random((16, 28, 28, 1)) > 0.5).astype("float32")
    terms = model.compute_terms(x, seed=1)
    assert terms["score_correction"].shape == (1, 16)
    assert float(model.gradient_surrogate(terms)) == 0.0  # zero in value, a gradient term only
    mu, kappa = model.encode(x)
    np.testing.assert_allclose(np.linalg.norm(mu, axis=1), 1.0, atol=1e-5)
    assert np.all(np.asarray(kappa) > 1.0)
    z = model.prior_layer.from_noise(**model.prior_layer.draw_noise(500, tf.constant([1, 2]))).numpy()
    np.testing.assert_allclose(np.linalg.norm(z, axis=1), 1.0, atol=1e-5)  # prior draws lie on the sphere
    assert np.abs(z.mean(0)).max() < 0.15  # and are spread over it


def test_traversals_follow_great_circles_through_the_code():
    model = vaezoo.get("hyperspherical_vae", latent_dim=4, hidden_units=[16], seed=0)
    x = np.random.default_rng(1).random((1, 28, 28, 1)).astype("float32")
    grid = model.traverse(x, steps=5)
    assert grid.shape == (4, 5, 28, 28, 1)
    centre = np.asarray(model.decode(model.code(x)))[0]
    for row in grid:  # angle 0 is the code itself
        np.testing.assert_allclose(row[2], centre, atol=1e-5)
    assert not np.allclose(grid[0, 0], grid[0, 4])


@pytest.mark.parametrize("overrides, named", [
    ({"latent_dim": 1}, "latent_dim"),
    ({"rejection_proposals": 0}, "rejection_proposals"),
    ({"prior": "normal"}, "spherical_uniform"),
])
def test_bad_settings_name_the_key_and_the_valid_values(overrides, named):
    with pytest.raises(vaezoo.ConfigError, match=named):
        vaezoo.get("hyperspherical_vae", **overrides)


def test_a_sphere_posterior_refuses_a_prior_on_the_real_line():
    with pytest.raises(vaezoo.ConfigError, match="sphere.*spherical_uniform"):
        vaezoo.get("vae", posterior="von_mises_fisher", prior="normal")
