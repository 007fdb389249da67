"""IWAE, importance-sampled log-likelihood against exact answers, and the score-function estimator."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

import vaezoo
from vaezoo import cli, evaluate
from vaezoo.models.base import BaseVAE

from conftest import batch_for, tiny


# ---- a model whose log p(x) is known exactly --------------------------------------------------


def linear_gaussian(data_dim=5, latent_dim=2, sigma=0.5, posterior_log_var_offset=0.7, seed=0, **overrides):
    """p(z) = N(0, I), p(x|z) = N(W z + b, sigma^2 I), so p(x) = N(b, W W^T + sigma^2 I).

    The encoder is set to the exact posterior mean with the diagonal of the exact posterior
    covariance inflated by exp(offset): close to, but not, the true posterior, so the bounds have
    gaps. Returns the model and a function giving the exact log p(x).
    """
    rng = np.random.default_rng(seed)
    model = vaezoo.VAE(data_shape=(data_dim,), latent_dim=latent_dim, hidden_units=(), likelihood="gaussian",
                       likelihood_scale=sigma, seed=seed, **overrides)
    kernel = rng.normal(size=(latent_dim, data_dim)).astype("float32")  # decoder mean = z @ K + b, W = K^T
    bias = rng.normal(size=(data_dim,)).astype("float32")
    model.decoder.layers[0].set_weights([kernel, bias])
    post_cov = np.linalg.inv(np.eye(latent_dim) + kernel @ kernel.T / sigma**2)
    gain = kernel.T @ post_cov / sigma**2  # posterior mean = (x - b) @ gain
    log_var = np.log(np.diag(post_cov)) + posterior_log_var_offset
    enc_kernel = np.concatenate([gain, np.zeros((data_dim, latent_dim))], axis=1).astype("float32")
    enc_bias = np.concatenate([-bias @ gain, log_var]).astype("float32")
    model.posterior_layer.projection.set_weights([enc_kernel, enc_bias])
    cov = kernel.T.astype(np.float64) @ kernel + sigma**2 * np.eye(data_dim)
    marginal = tfp.distributions.MultivariateNormalTriL(bias.astype(np.float64), tf.linalg.cholesky(cov))

    def exact_logpdf(x):
        return marginal.log_prob(np.asarray(x, np.float64)).numpy()

    def sample_x(n, seed=1):
        r = np.random.default_rng(seed)
        z = r.normal(size=(n, latent_dim))
        return (z @ kernel + bias + sigma * r.normal(size=(n, data_dim))).astype("float32")

    return model, exact_logpdf, sample_x


def _draws(fn, x, reps, seed):
    """``reps`` independent draws of a per-example estimator ``fn(x, seed) -> [B]``, as ``[reps, B]``.

    One call on ``x`` tiled ``reps`` times: every row gets its own samples, so the rows of the
    result are independent draws (and the test runs one batched op instead of ``reps`` eager ones).
    """
    x = np.asarray(x)
    values = np.asarray(fn(np.tile(x, (reps,) + (1,) * (x.ndim - 1)), seed))
    return values.reshape(reps, len(x))


def _k_sample_bound(model, k):
    """The K-sample bound L_k per example, ``(x, seed) -> [B]``, from the model's importance log-weights."""
    return lambda x, seed: tf.reduce_logsumexp(model.log_weights(x, k, seed=seed), axis=0) - math.log(k)


def _mean_bound(model, x, k, reps=400):
    """E[L_k] per example, estimated by averaging `reps` independent L_k estimates; returns mean and s.e."""
    values = _draws(_k_sample_bound(model, k), x, reps, seed=(7, k)).mean(axis=1)  # average over examples, per repetition
    return values.mean(), values.std(ddof=1) / math.sqrt(reps)


def test_bounds_are_ordered_and_the_estimate_converges_to_the_exact_log_likelihood():
    model, exact_logpdf, sample_x = linear_gaussian()
    x = sample_x(64)
    exact = float(np.mean(exact_logpdf(x)))
    elbo = float(np.mean(_draws(model.elbo, x, 400, seed=(3, 0))))
    l5, se5 = _mean_bound(model, x, 5)
    l50, se50 = _mean_bound(model, x, 50, reps=100)
    # ELBO <= L_5 <= L_50 <= log p(x), within Monte-Carlo error, with real gaps.
    assert elbo < l5 - 3 * se5, (elbo, l5)
    assert l5 < l50 - 3 * (se5 + se50), (l5, l50)
    assert l50 < exact + 3 * se50, (l50, exact)
    assert exact - elbo > 0.1  # the posterior is deliberately inexact
    result = evaluate.log_likelihood(model, x, num_samples=5000, batch_size=32)
    assert result.per_example.shape == (64,)
    assert abs(result.mean - exact) < 0.01, (result.mean, exact)
    np.testing.assert_allclose(result.per_example, exact_logpdf(x), atol=0.05)
    assert result.bits_per_dim == pytest.approx(-result.mean / (5 * math.log(2)))


def test_exact_posterior_makes_every_bound_exact():
    """With q(z|x) = p(z|x) (latent_dim 1: the exact posterior is diagonal), log w = log p(x) for every z."""
    model, exact_logpdf, sample_x = linear_gaussian(latent_dim=1, posterior_log_var_offset=0.0)
    x = sample_x(16)
    lw = model.log_weights(x, 10, seed=(1, 1)).numpy()
    np.testing.assert_allclose(lw, np.broadcast_to(exact_logpdf(x), lw.shape), atol=2e-4)
    # The closed-form-KL ELBO estimator log p(x|z) - KL is exact only in expectation.
    draws = _draws(model.elbo, x, 400, seed=(2, 0))
    se = draws.std(0, ddof=1) / math.sqrt(len(draws))
    assert np.all(np.abs(draws.mean(0) - exact_logpdf(x)) < 4.5 * se + 1e-4)


def test_log_likelihood_chunks_and_datasets_agree():
    model, exact_logpdf, sample_x = linear_gaussian()
    x = sample_x(40)
    whole = evaluate.log_likelihood(model, x, num_samples=3000, batch_size=40)
    chunked = evaluate.log_likelihood(model, tf.data.Dataset.from_tensor_slices(x).batch(7), num_samples=3000,
                                      chunk_size=128)
    # Different draws, same target: both within a small Monte-Carlo error of each other and the truth.
    np.testing.assert_allclose(whole.per_example, chunked.per_example, atol=0.1)
    np.testing.assert_allclose(chunked.per_example, exact_logpdf(x), atol=0.1)
    repeat = evaluate.log_likelihood(model, x, num_samples=3000, batch_size=40)
    np.testing.assert_array_equal(whole.per_example, repeat.per_example)  # seeded


def test_log_likelihood_under_xla_estimates_the_same_log_likelihood():
    model, exact_logpdf, sample_x = linear_gaussian()
    x = sample_x(40)
    xla = evaluate.log_likelihood(model, x, num_samples=3000, batch_size=40, jit_compile=True)
    # XLA's stateless generator draws other samples than the graph's: the same target, within Monte-Carlo error.
    np.testing.assert_allclose(xla.per_example, exact_logpdf(x), atol=0.1)
    assert np.array_equal(xla.per_example, evaluate.log_likelihood(model, x, num_samples=3000, batch_size=40,
                                                                   jit_compile=True).per_example)  # seeded
    # "auto": the model's compiled choice, else what compile() would pick (xla_by_default, tests' AUTO off).
    vae = tiny("vae")
    assert evaluate.resolve_jit_compile(vae) is False  # the test suite turns auto-XLA off (conftest)
    vae.compile(jit_compile=True)
    assert evaluate.resolve_jit_compile(vae) is True and evaluate.resolve_jit_compile(vae, False) is False
    with pytest.raises(ValueError, match="jit_compile must be 'auto', True or False, got 'yes'"):
        evaluate.resolve_jit_compile(vae, "yes")


def test_log_likelihood_rejects_models_without_continuous_latents():
    with pytest.raises(TypeError, match="log_weights"):
        evaluate.log_likelihood(keras.Sequential([keras.layers.Dense(1)]), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="num_samples must be >= 1"):
        evaluate.log_likelihood(tiny("vae"), np.zeros((2, 28, 28, 1), "float32"), num_samples=0)


# ---- IWAE -------------------------------------------------------------------------------------


def test_iwae_with_one_sample_is_the_vae_elbo_estimator():
    # With a prior that has no closed-form KL both use log p(x|z) + log p(z) - log q(z|x): identical.
    vae = tiny("vae", prior="mixture", seed=1, activation="tanh")
    iwae = tiny("iwae", prior="mixture", num_samples=1, seed=1, activation="tanh")
    iwae.set_weights(vae.get_weights())
    x = batch_for(vae, n=8)
    np.testing.assert_allclose(iwae.iwae_bound(x, seed=4), vae.elbo(x, seed=4), rtol=1e-6)
    # With the closed-form KL the VAE's estimator differs per draw but not in expectation.
    vae, iwae = tiny("vae", seed=1, activation="tanh"), tiny("iwae", num_samples=1, seed=1, activation="tanh")
    iwae.set_weights(vae.get_weights())
    a = np.mean(_draws(iwae.iwae_bound, x, 300, seed=(5, 0)))
    b = np.mean(_draws(vae.elbo, x, 300, seed=(5, 0)))
    spread = np.std(_draws(iwae.iwae_bound, x, 100, seed=(6, 0)).mean(axis=1))
    assert abs(a - b) < 4 * spread / math.sqrt(300), (a, b)


def test_iwae_bound_is_the_log_mean_exp_of_the_log_weights():
    model = tiny("iwae", num_samples=7)
    x = batch_for(model, n=4)
    terms = model.compute_terms(x, seed=3)
    log_w = terms["log_px"] + terms["log_pz"] - terms["log_qz"]
    assert log_w.shape == (7, 4)
    expected = np.log(np.mean(np.exp(log_w.numpy().astype(np.float64) - log_w.numpy().max(0)), 0)) + log_w.numpy().max(0)
    np.testing.assert_allclose(terms["iwae_bound"], expected, rtol=1e-5)
    assert np.all(terms["iwae_bound"].numpy() >= terms["elbo"].numpy() - 1e-3 * np.abs(terms["elbo"].numpy()))


def test_iwae_trains_through_the_base_train_step_with_its_metrics():
    assert vaezoo.IWAE.train_step is BaseVAE.train_step and vaezoo.IWAE.test_step is BaseVAE.test_step
    model = tiny("iwae")
    assert model.num_samples == 5  # the config's default K
    x = batch_for(model, n=16)
    model.compile(keras.optimizers.Adam(1e-3))
    history = model.fit(tf.data.Dataset.from_tensors(x).repeat(3), epochs=1, verbose=0)
    assert set(history.history) == {"loss", "iwae_bound", "elbo", "reconstruction", "kl"}
    assert history.history["loss"][0] == pytest.approx(-history.history["iwae_bound"][0], rel=1e-5)


def test_vae_with_k_samples_averages_k_elbo_draws():
    model = tiny("vae", num_samples=4)
    x = batch_for(model, n=3)
    terms = model.compute_terms(x, seed=2)
    assert terms["log_px"].shape == (4, 3)
    np.testing.assert_allclose(terms["reconstruction"], -np.mean(terms["log_px"], 0), rtol=1e-6)


# ---- the score-function estimator ---------------------------------------------------------------


def _encoder_slice(model):
    """Indices of the encoder's (posterior projection's) weights in the flattened gradient."""
    sizes = [int(np.prod(v.shape)) for v in model.trainable_variables]
    start = 0
    for v, n in zip(model.trainable_variables, sizes):
        if "posterior" in v.path:
            return slice(start, start + sum(int(np.prod(w.shape)) for w in model.posterior_layer.trainable_variables))
        start += n
    raise AssertionError("no posterior weights")


def test_score_function_gradients_agree_with_reparameterisation_and_are_noisier():
    x = linear_gaussian()[2](8)
    grads = {}
    for estimator in ("reparameterization", "score_function"):
        model, _, _ = linear_gaussian(gradient_estimator=estimator)
        terms = model.compute_terms(x, seed=0)
        model.score_baseline.assign(float(np.mean(terms["log_px"])))  # a settled baseline
        grads[estimator] = evaluate.gradient_statistics(model, x, num_draws=3000, seed=1)
    enc = _encoder_slice(model)
    r, s = grads["reparameterization"], grads["score_function"]
    n = 3000
    se = np.sqrt(r["variance"][enc] / n + s["variance"][enc] / n)
    z = np.abs(r["mean"][enc] - s["mean"][enc]) / se
    assert np.all(z < 4.5), z  # unbiased both: the means agree within statistical error
    ratio = s["variance"][enc].sum() / r["variance"][enc].sum()
    print(f"score-function / reparameterisation gradient variance ratio (encoder): {ratio:.1f}")
    assert ratio > 2.0
    # Decoder gradients do not involve the estimator: identical draws give identical gradients.
    dec = slice(enc.stop, None) if enc.start == 0 else slice(0, enc.start)
    np.testing.assert_allclose(r["mean"][dec], s["mean"][dec], rtol=1e-4, atol=1e-5)


def test_score_function_trains_and_its_surrogate_adds_nothing_to_the_loss():
    model = tiny("vae", gradient_estimator="score_function")
    x = batch_for(model, n=32)
    terms = model.compute_terms(x, seed=1)
    assert float(model.gradient_surrogate(terms)) == 0.0
    before = float(model.objective(model.compute_terms(x, seed=7)))
    model.compile(keras.optimizers.Adam(3e-3))
    model.fit(tf.data.Dataset.from_tensors(x).repeat(40), epochs=1, verbose=0)
    assert float(model.score_baseline) != 0.0  # the baseline tracked the learning signal
    assert float(model.objective(model.compute_terms(x, seed=7))) < 0.7 * before
    iwae = tiny("iwae", gradient_estimator="score_function")
    iwae.compile(keras.optimizers.Adam(1e-3), jit_compile=True)
    assert np.isfinite(iwae.fit(tf.data.Dataset.from_tensors(x).repeat(2), verbose=0).history["loss"][-1])


def test_unknown_gradient_estimator():
    with pytest.raises(ValueError, match="'gradient_estimator'.*one of reparameterization, score_function.*'reinforce'"):
        vaezoo.get("vae", gradient_estimator="reinforce")


def test_cli_evaluate_with_importance_samples(tmp_path, capsys):
    model = tiny("vae", data_shape=[32, 32, 1])
    model.save(tmp_path / "m.keras")
    code = cli.main(["evaluate", "vae", "--checkpoint", str(tmp_path / "m.keras"), "--dataset", "sprites",
                     "--binarize", "none", "--limit", "40", "--num-samples", "50", "--verbose", "0"])
    assert code == 0
    out = capsys.readouterr().out
    values = {line.split(":")[0].strip(): line.split(":")[1].split()[0] for line in out.splitlines()[1:]}
    assert float(values["NLL"]) == pytest.approx(-float(values["log p(x)"]), rel=1e-4)
    assert float(values["bits/dim"]) == pytest.approx(float(values["NLL"]) / (1024 * math.log(2)), rel=1e-3)
    assert -float(values["log p(x)"]) <= -float(values["elbo"]) + 1.0  # the IS estimate is the tighter bound


class DiscreteMixture:
    """The design documents' Example 11.5: p(z) uniform over 3 components, p(x|z=k) = N(mu_k, Sigma_k) in R^2.

    log p(x) = log sum_k p(z=k) p(x|z=k) is exact. ``log_weights`` samples z from a proposal: the prior
    (Concept 11.6's choice 1) or a tempered posterior (importance sampling, choice 2).
    """

    data_shape = (2,)

    def __init__(self, proposal):
        tfd = tfp.distributions
        self.prior = tfd.Categorical(logits=tf.zeros(3))
        locs = tf.constant([[-4.0, 0.0], [4.0, 0.0], [0.0, 5.0]])
        scale_tril = tf.constant([[[1.0, 0.0], [0.3, 0.8]], [[0.7, 0.0], [-0.2, 1.2]], [[1.5, 0.0], [0.0, 0.5]]])
        self.components = tfd.MultivariateNormalTriL(locs, scale_tril)  # batch [3]
        self.marginal = tfd.MixtureSameFamily(self.prior, self.components)
        self.proposal = proposal

    def _q(self, x):
        if self.proposal == "prior":
            return tfp.distributions.Categorical(logits=tf.zeros([tf.shape(x)[0], 3]))
        joint = self.components.log_prob(x[:, None, :]) + self.prior.logits_parameter()  # [B, 3]
        return tfp.distributions.Categorical(logits=0.5 * joint)  # a flattened posterior, not the exact one

    def log_weights(self, x, num_samples, seed=None):
        q = self._q(x)
        z = q.sample(num_samples, seed=seed)  # [S, B]
        log_px_z = tf.gather(self.components.log_prob(x[:, None, :]), tf.transpose(z), batch_dims=1)  # [B, S]
        return tf.transpose(log_px_z) + self.prior.log_prob(z) - q.log_prob(z)


def test_importance_sampling_on_the_discrete_mixture_of_gaussians():
    model = DiscreteMixture("posterior")
    x = model.marginal.sample(50, seed=(1, 2)).numpy()
    exact = model.marginal.log_prob(x).numpy()
    good = evaluate.log_likelihood(model, x, num_samples=5000)
    np.testing.assert_allclose(good.per_example, exact, atol=0.02)
    # Sampling z from the prior also converges, but each small-S estimate is far noisier.
    prior = DiscreteMixture("prior")
    spread_prior = np.std(_draws(_k_sample_bound(prior, 3), x, 30, seed=(1, 0)), 0)
    spread_good = np.std(_draws(_k_sample_bound(model, 3), x, 30, seed=(1, 0)), 0)
    assert np.median(spread_prior) > 5 * np.median(spread_good), (np.median(spread_prior), np.median(spread_good))
