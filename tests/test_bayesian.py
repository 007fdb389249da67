"""Full variational Bayes over the decoder (vaezoo.bayesian, bayesian_vae) against exact answers.

With z observed (no encoder) and a linear layer with a Gaussian likelihood, the weight part of the
bound is Bayesian linear regression, whose log evidence is closed form:

    y_j ~ N(0, alpha^2 Z~ Z~^T + sigma^2 I) for each output column j, Z~ = [Z, 1].

The factorised Gaussian q(theta) can represent the exact posterior when the design Z~ has orthogonal
columns: then the bound L = E_q[log p(Y | theta)] - KL(q || p_alpha) equals the log evidence; for
any other q or design it lies below it.
"""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

import vaezoo
from vaezoo import bayesian, evaluate

tfd = tfp.distributions
SIGMA = 0.5  # the likelihood's noise
ALPHA = 1.3  # the hyperprior's scale


def hadamard(n):
    h = np.array([[1.0]])
    while h.shape[0] < n:
        h = np.block([[h, h], [h, -h]])
    return h


def regression(design, seed=0, units=2):
    """A linear BayesianDense on inputs ``design`` [N, d] and targets drawn from the model."""
    rng = np.random.default_rng(seed)
    n, d = design.shape
    w = rng.normal(0, ALPHA, (d + 1, units))
    y = np.c_[design, np.ones(n)] @ w + rng.normal(0, SIGMA, (n, units))
    layer = bayesian.BayesianDense(units, prior_scale=ALPHA, learn_prior_scale=False, posterior_init_scale=0.1)
    layer.build((None, d))
    return layer, design.astype("float32"), y.astype("float32")


def log_evidence(design, y):
    full = np.c_[design, np.ones(len(design))].astype("float64")
    cov = ALPHA**2 * full @ full.T + SIGMA**2 * np.eye(len(design))
    return sum(tfd.MultivariateNormalTriL(np.zeros(len(design)), np.linalg.cholesky(cov)).log_prob(y[:, j]).numpy()
               for j in range(y.shape[1]))


def bound(layer, z, y, draws=4000, seed=(1, 2)):
    """Monte-Carlo E_q[log p(Y|theta)] - KL(q || p) with the layer's own sampling, and its standard error."""
    noise = layer.draw_noise(draws, z.shape[0], tf.constant(seed), "sample")
    mean = layer(np.broadcast_to(z, (draws, *z.shape)), noise=noise, mode="sample")  # [S, N, units]
    log_lik = tf.reduce_sum(tfd.Normal(mean, SIGMA).log_prob(y), axis=[1, 2]).numpy()  # [S]
    kl = float(layer.kl_divergence())
    return log_lik.mean() - kl, log_lik.std() / math.sqrt(draws)


def set_exact_posterior(layer, z, y):
    """q(theta) := the exact posterior, which is factorised for an orthogonal design."""
    full = np.c_[z, np.ones(len(z))].astype("float64")
    gram = full.T @ full
    assert np.allclose(gram, np.diag(np.diag(gram)))
    variance = 1.0 / (np.diag(gram) / SIGMA**2 + 1.0 / ALPHA**2)  # [d + 1]
    mean = (variance[:, None] * (full.T @ y)) / SIGMA**2  # [d + 1, units]
    raw = np.log(np.expm1(np.sqrt(variance)))  # inverse softplus of the standard deviations
    units = y.shape[1]
    layer.kernel_loc.assign(mean[:-1].astype("float32"))
    layer.bias_loc.assign(mean[-1].astype("float32"))
    layer.kernel_raw_scale.assign(np.repeat(raw[:-1, None], units, 1).astype("float32"))
    layer.bias_raw_scale.assign(np.full(units, raw[-1], "float32"))


def test_bound_equals_the_log_evidence_at_the_exact_posterior_of_an_orthogonal_design():
    design = hadamard(16)[:, 1:4] * np.array([1.0, 0.5, 2.0])  # orthogonal columns, also to the bias
    layer, z, y = regression(design)
    exact = log_evidence(z, y)
    set_exact_posterior(layer, z, y)
    value, error = bound(layer, z, y)
    assert abs(value - exact) < 4 * error + 1e-3, (value, exact, error)
    # Moving q away from the exact posterior lowers the bound by more than its Monte-Carlo error.
    layer.kernel_loc.assign(layer.kernel_loc + 0.3)
    worse, error = bound(layer, z, y)
    assert worse < exact - 4 * error - 0.5


def test_optimising_the_bound_reaches_the_log_evidence_only_where_q_can_represent_the_posterior():
    def optimise(design, steps=2000):
        layer, z, y = regression(design, seed=3)
        # a falling step size, so that the noise of the stochastic gradient does not stay in the optimum
        optimizer = keras.optimizers.Adam(keras.optimizers.schedules.ExponentialDecay(0.05, 500, 0.3))
        variables = layer.trainable_variables

        @tf.function
        def step(i):
            with tf.GradientTape() as tape:
                noise = layer.draw_noise(32, z.shape[0], tf.stack([7, i]), "sample")
                mean = layer(tf.broadcast_to(z, (32, *z.shape)), noise=noise, mode="sample")
                loss = -tf.reduce_mean(tf.reduce_sum(tfd.Normal(mean, SIGMA).log_prob(y), axis=[1, 2]))
                loss += layer.kl_divergence()
            optimizer.apply(tape.gradient(loss, variables), variables)

        for i in range(steps):
            step(tf.constant(i))
        return bound(layer, z, y), log_evidence(z, y)

    (value, error), exact = optimise(hadamard(16)[:, 1:4])
    assert abs(value - exact) < 0.1, (value, exact, error)  # the optimum of the factorised q is exact
    rng = np.random.default_rng(0)
    correlated = rng.normal(size=(16, 3)) @ np.array([[1.0, 0.9, 0.8], [0.0, 0.4, 0.3], [0.0, 0.0, 0.2]])
    (value, error), exact = optimise(correlated)
    assert value < exact - 0.5, (value, exact)  # a correlated posterior: the factorised bound stays below


def test_closed_form_weight_kl_matches_monte_carlo():
    layer, z, _ = regression(np.random.default_rng(1).normal(size=(8, 3)))
    layer.kernel_loc.assign(np.random.default_rng(2).normal(size=(3, 2)).astype("float32"))
    layer.kernel_raw_scale.assign(np.full((3, 2), 0.3, "float32"))
    noise = layer.draw_noise(100_000, 1, tf.constant([3, 4]), "sample")
    monte_carlo = -layer.log_ratio(noise).numpy()  # log q - log p at the draws
    closed = float(layer.kl_divergence())
    assert abs(monte_carlo.mean() - closed) < 4 * monte_carlo.std() / math.sqrt(len(monte_carlo))
    # and by hand: sum over weights of log(a / s) + (s^2 + m^2) / (2 a^2) - 1/2
    q_kernel, q_bias = layer.posterior()
    s = np.r_[q_kernel.scale.numpy().ravel(), q_bias.scale.numpy().ravel()]
    m = np.r_[q_kernel.loc.numpy().ravel(), q_bias.loc.numpy().ravel()]
    by_hand = np.sum(np.log(ALPHA / s) + (s**2 + m**2) / (2 * ALPHA**2) - 0.5)
    np.testing.assert_allclose(closed, by_hand, rtol=1e-5)


def test_gradient_wrt_the_hyperprior_scale_vanishes_at_its_closed_form_optimum():
    layer = bayesian.BayesianDense(4, prior_scale=1.0, learn_prior_scale=True, posterior_init_scale=0.2)
    layer.build((None, 5))
    layer.kernel_loc.assign(np.random.default_rng(0).normal(0, 0.7, (5, 4)).astype("float32"))

    def gradient():
        with tf.GradientTape() as tape:
            kl = layer.kl_divergence()
        return float(tape.gradient(kl, layer.log_prior_scale))

    assert abs(gradient()) > 1.0  # alpha = 1 is not the optimum here
    layer.log_prior_scale.assign(tf.math.log(layer.optimal_prior_scale()))
    assert abs(gradient()) < 1e-3
    assert layer.log_prior_scale.trainable


def test_flipout_and_reparameterisation_draw_outputs_of_the_same_law():
    layer = bayesian.BayesianDense(3, posterior_init_scale=0.5)
    layer.build((None, 4))
    x = np.tile(np.random.default_rng(0).normal(size=(1, 4)).astype("float32"), (20_000, 1))[None]  # one row, many times
    sampled = layer(np.broadcast_to(x[0][:1], (20_000, 1, 4)), noise=layer.draw_noise(20_000, 1, tf.constant([1, 1]), "sample"),
                    mode="sample").numpy()[:, 0]
    flipped = layer(x, noise=layer.draw_noise(1, 20_000, tf.constant([2, 2]), "flipout"), mode="flipout").numpy()[0]
    # a single flipout draw: rows share |perturbation| but differ in sign, so only the moments over rows are compared
    np.testing.assert_allclose(sampled.mean(0), layer(x[:, :1], mode="mean").numpy()[0, 0], atol=0.05)
    np.testing.assert_allclose(flipped.mean(0), sampled.mean(0), atol=0.05)
    assert np.all(flipped.std(0) > 0)


def test_bayesian_vae_bound_is_the_elbo_minus_the_weight_kl_over_n():
    model = vaezoo.get("bayesian_vae", hidden_units=[16], latent_dim=3, dataset_size=500, seed=0)
    x = (np.random.default_rng(0).random((6, 28, 28, 1)) > 0.5).astype("float32")
    terms = model.compute_terms(x, seed=4)
    kl = float(model.decoder.kl_divergence())
    np.testing.assert_allclose(terms["weight_kl"], kl / 500, rtol=1e-6)
    np.testing.assert_allclose(terms["bound"], terms["elbo"] - kl / 500, rtol=1e-6)
    np.testing.assert_allclose(float(model.objective(terms)), -np.mean(terms["bound"]), rtol=1e-5)
    # the same weight draw for every example of a batch: a seed fixes it, another seed changes it
    again = model.compute_terms(x, seed=4)
    np.testing.assert_array_equal(terms["reconstruction"], again["reconstruction"])
    assert not np.allclose(terms["reconstruction"], model.compute_terms(x, seed=5)["reconstruction"])
    # monte_carlo weight KL: eq. (9) at the draw, same expectation as the closed form
    mc = vaezoo.get("bayesian_vae", hidden_units=[16], latent_dim=3, dataset_size=500, seed=0, weight_kl="monte_carlo",
                    weight_posterior_init_scale=0.05)
    draws = np.array([float(mc.compute_terms(x[:1], seed=s)["weight_kl"][0]) for s in range(200)]) * 500
    closed = float(mc.decoder.kl_divergence())
    assert abs(draws.mean() - closed) < 4 * draws.std() / math.sqrt(len(draws)), (draws.mean(), closed)


def test_bayesian_vae_predictive_likelihood_integrates_the_weights():
    model = vaezoo.get("bayesian_vae", hidden_units=[16], latent_dim=3, dataset_size=500, seed=0,
                       weight_posterior_init_scale=0.2)
    x = (np.random.default_rng(1).random((4, 28, 28, 1)) > 0.5).astype("float32")
    sampled = evaluate.log_likelihood(model, x, num_samples=200, batch_size=4)
    assert np.all(np.isfinite(sampled.per_example))
    # Posterior-mean weights give another (point-estimate) model: its estimate differs.
    mean_weights = model.log_weights(x, 200, seed=0, weights="mean")
    assert mean_weights.shape == (200, 4)
    assert not np.allclose(np.asarray(model.log_weights(x, 200, seed=0)), np.asarray(mean_weights))
    # Weight draws differ between samples of one image; the mean weights do not.
    images = model.sample(4, seed=0)
    again = model.sample(4, seed=0)
    np.testing.assert_array_equal(images, again)
    mean, std = model.reconstruction_uncertainty(x, num_draws=8, seed=0)
    assert mean.shape == std.shape == x.shape and float(tf.reduce_min(std)) >= 0 and float(tf.reduce_max(std)) > 0
    with pytest.raises(ValueError, match="Unknown weights 'median'; valid choices: sample, mean"):
        model.sample(2, weights="median")


def test_bayesian_vae_needs_n_and_says_how_to_set_it():
    with pytest.raises(vaezoo.ConfigError, match="dataset_size.*dataset_size=N.*--set dataset_size=N"):
        vaezoo.get("bayesian_vae", dataset_size=None)
    with pytest.raises(vaezoo.ConfigError, match="'architecture'.*one of mlp, conv.*'resnet'"):
        vaezoo.get("bayesian_vae", architecture="resnet")
    with pytest.raises(vaezoo.ConfigError, match="monte_carlo.*reparameterization"):
        vaezoo.get("bayesian_vae", weight_kl="monte_carlo", weight_estimator="flipout")


def test_cli_train_sets_n_from_the_data_and_sample_writes_the_uncertainty_map(tmp_path, capsys):
    from PIL import Image

    from vaezoo import cli

    out = tmp_path / "run"
    code = cli.main(["train", "bayesian_vae", "--set", "hidden_units=[16]", "--set", "latent_dim=2", "--dataset",
                     "sprites", "--binarize", "none", "--epochs", "1", "--limit", "96", "--batch-size", "32",
                     "--out", str(out), "--verbose", "0", "--seed", "0"])
    assert code == 0
    assert "dataset_size 60000 -> 96: the number of training examples" in capsys.readouterr().out
    model = keras.models.load_model(out / "model.keras")
    assert model.dataset_size == 96 and model.data_shape == (32, 32, 1)
    uncertainty = np.asarray(Image.open(out / "samples_uncertainty.png"))
    assert uncertainty.std() > 0
    grid = tmp_path / "grid.png"
    assert cli.main(["sample", "bayesian_vae", "--checkpoint", str(out / "model.keras"), "--out", str(grid),
                     "--dataset", "sprites", "--binarize", "none", "--seed", "1"]) == 0
    assert (tmp_path / "grid_uncertainty.png").is_file()


def test_exports_decode_with_the_posterior_mean_weights_and_the_seeded_signature_is_saved_model_only(tmp_path):
    from ai_edge_litert.interpreter import Interpreter

    model = vaezoo.get("bayesian_vae", hidden_units=[16], latent_dim=3, dataset_size=100, seed=0,
                       weight_posterior_init_scale=0.3)
    path = vaezoo.export.tflite(model, tmp_path / "b.tflite")
    runner = Interpreter(str(path)).get_signature_runner("decode")
    z = np.random.default_rng(0).normal(size=(2, 3)).astype("float32")
    np.testing.assert_allclose(runner(z=z)["images"], model.decode(z, weights="mean"), atol=1e-5)
    assert not np.allclose(model.decode(z, weights="sample", seed=1), model.decode(z))  # draws differ from the mean
    with pytest.raises(ValueError, match="'sample_weights' signature.*no TFLite builtin form.*SavedModel only"):
        vaezoo.export.tflite(model, tmp_path / "s.tflite", signatures=["sample_weights"])
    saved = vaezoo.load_exported(vaezoo.export.saved_model(model, tmp_path / "sm"))
    out = saved.sample_weights(n=np.int32(3), seed=np.array([4, 5], np.int32))["images"]
    np.testing.assert_allclose(out, model.sample(3, seed=tf.constant([4, 5])), atol=1e-5)


# ---- the convolutional layers ------------------------------------------------------------------

CONVS = [(bayesian.BayesianConv2D, keras.layers.Conv2D), (bayesian.BayesianConv2DTranspose, keras.layers.Conv2DTranspose)]


def _conv_pair(bayesian_cls, keras_cls, padding, scale=0.3):
    layer = bayesian_cls(3, kernel_size=3, strides=2, padding=padding, posterior_init_scale=scale, seed=0)
    reference = keras_cls(3, 3, strides=2, padding=padding)
    layer.build((None, 6, 6, 2))
    reference.build((None, 6, 6, 2))
    layer.bias_loc.assign(np.random.default_rng(1).normal(size=3).astype("float32"))
    return layer, reference


@pytest.mark.parametrize("padding", ["same", "valid"])
@pytest.mark.parametrize("bayesian_cls,keras_cls", CONVS, ids=["conv", "transpose"])
def test_conv_layers_are_keras_convolutions_under_the_mean_and_each_drawn_kernel(bayesian_cls, keras_cls, padding):
    layer, reference = _conv_pair(bayesian_cls, keras_cls, padding)
    x = np.random.default_rng(0).normal(size=(2, 4, 6, 6, 2)).astype("float32")  # 2 draws x 4 rows
    reference.set_weights([layer.kernel_loc.numpy(), layer.bias_loc.numpy()])
    mean = layer(x, mode="mean").numpy()
    np.testing.assert_allclose(mean, reference(x.reshape(8, 6, 6, 2)).numpy().reshape(mean.shape), atol=1e-5)
    noise = layer.draw_noise(2, 4, tf.constant([3, 4]), "sample")
    drawn = layer(x, noise=noise, mode="sample").numpy()
    kernel, bias = [q.loc + q.scale * zeta for q, zeta in zip(layer.posterior(), (noise["kernel"], noise["bias"]))]
    for s in range(2):
        reference.set_weights([kernel[s].numpy(), bias[s].numpy()])
        np.testing.assert_allclose(drawn[s], reference(x[s]).numpy(), atol=1e-5)
    assert not np.allclose(drawn[0], mean[0], atol=1e-2)


@pytest.mark.parametrize("bayesian_cls,keras_cls", CONVS, ids=["conv", "transpose"])
def test_conv_flipout_and_reparameterisation_match_the_exact_output_moments(bayesian_cls, keras_cls):
    """Each output of a draw is Gaussian with mean conv(x, mu) + b and variance conv(x^2, sigma^2) + sigma_b^2
    (independent weights): both samplers, over 1,000 draws, against that exact answer."""
    layer, reference = _conv_pair(bayesian_cls, keras_cls, "same", scale=0.5)
    x = np.random.default_rng(2).normal(size=(1, 1, 6, 6, 2)).astype("float32")
    kernel_q, bias_q = layer.posterior()
    reference.set_weights([kernel_q.loc.numpy(), bias_q.loc.numpy()])
    exact_mean = reference(x[0]).numpy()[0]
    reference.set_weights([kernel_q.scale.numpy() ** 2, bias_q.scale.numpy() ** 2])
    exact_var = reference(x[0] ** 2).numpy()[0]
    sampled = layer(np.repeat(x, 1000, 0), noise=layer.draw_noise(1000, 1, tf.constant([1, 1]), "sample"),
                    mode="sample").numpy()[:, 0]
    flip = tf.function(lambda s: layer(x, noise=layer.draw_noise(1, 1, s, "flipout"), mode="flipout")[0, 0])
    flipped = np.stack([flip(tf.constant([7, s])).numpy() for s in range(1000)])
    for draws in (sampled, flipped):
        z = (draws.mean(0) - exact_mean) / np.sqrt(exact_var / 1000)
        assert np.abs(z).max() < 4.5, np.abs(z).max()  # 108 outputs: a |z| > 4.5 has odds ~1e-3 under the law
        np.testing.assert_allclose(draws.var(0), exact_var, rtol=0.25)  # 1,000 draws: variance's rel. s.e. 4.5%


def test_conv_layer_kl_is_closed_form_and_layers_round_trip_their_config():
    layer, _ = _conv_pair(bayesian.BayesianConv2DTranspose, keras.layers.Conv2DTranspose, "same", scale=0.2)
    noise = layer.draw_noise(4000, 1, tf.constant([5, 6]), "sample")
    monte_carlo = -layer.log_ratio(noise).numpy()
    assert abs(monte_carlo.mean() - float(layer.kl_divergence())) < 4 * monte_carlo.std() / math.sqrt(4000)
    decoder = bayesian.BayesianConvDecoder((8, 8, 1), hidden_units=(6,), conv_filters=(4, 5), seed=0,
                                           posterior_init_scale=0.1)
    decoder.build((None, 3))
    for original in (layer, decoder):
        clone = type(original).from_config(original.get_config())
        clone.build((None, 3) if original is decoder else (None, 6, 6, 2))
        clone.set_weights(original.get_weights())
        assert clone.get_config() == original.get_config()
    z = np.random.default_rng(0).normal(size=(2, 3, 3)).astype("float32")
    np.testing.assert_allclose(clone.apply(z, mode="sample", seed=tf.constant([1, 2])),
                               decoder.apply(z, mode="sample", seed=tf.constant([1, 2])), atol=1e-6)
    assert decoder(z[0]).shape == (3, 8, 8, 1)
    with pytest.raises(ValueError, match="Unknown padding 'full'; valid choices: same, valid"):
        bayesian.BayesianConv2D(3, padding="full")
    with pytest.raises(ValueError, match=r"divisible by 2 \*\* len\(conv_filters\) = 4.*\(6, 6, 1\)"):
        bayesian.BayesianConvDecoder((6, 6, 1), conv_filters=(4, 4))


def test_conv_bayesian_vae_trains_saves_and_exports_the_mean_decoder(tmp_path):
    from ai_edge_litert.interpreter import Interpreter

    model = vaezoo.get("bayesian_vae", architecture="conv", data_shape=[16, 16, 1], conv_filters=[4, 8],
                       hidden_units=[16], latent_dim=3, dataset_size=64, seed=0, weight_posterior_init_scale=0.05)
    assert isinstance(model.decoder, bayesian.BayesianConvDecoder)
    x = (np.random.default_rng(0).random((16, 16, 16, 1)) > 0.5).astype("float32")
    model.compile(keras.optimizers.Adam(1e-2))
    history = model.fit(x, batch_size=8, epochs=3, verbose=0).history
    assert history["loss"][-1] < history["loss"][0] and "weight_kl" in history
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    z = np.random.default_rng(1).normal(size=(2, 3)).astype("float32")
    np.testing.assert_allclose(loaded.decode(z), model.decode(z), atol=1e-6)
    np.testing.assert_allclose(loaded.decode(z, weights="sample", seed=3), model.decode(z, weights="sample", seed=3),
                               atol=1e-6)
    runner = Interpreter(str(vaezoo.export.tflite(model, tmp_path / "c.tflite"))).get_signature_runner("decode")
    np.testing.assert_allclose(runner(z=z)["images"], model.decode(z), atol=1e-5)
