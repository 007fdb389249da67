"""FactorVAE, beta-TCVAE and DIP-VAE: their estimators on cases with known answers, the
discriminator's own optimizer, and the 64x64 sprite-grid data they train on.

(Forward pass, training, XLA, saving and export of every registered model, these included, are
covered by the tests parametrised over ``vaezoo.list_models()``.)
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

import vaezoo
from vaezoo import data
from vaezoo.models.dipvae import dip_covariance, dip_regularizer
from vaezoo.models.factorvae import permute_dims
from vaezoo.models.tcvae import aggregate_log_densities, log_importance_weights

from conftest import batch_for, tiny

DISENTANGLING = ["factor_vae", "beta_tcvae", "dip_vae", "beta_vae_conv64"]


@pytest.mark.parametrize("name", DISENTANGLING)
def test_default_is_disentanglement_libs_architecture_on_the_sprite_grid(name):
    cfg = vaezoo.get_config(name)
    got = [cfg[k] for k in ("data_shape", "conv_filters", "hidden_units", "latent_dim", "likelihood")]
    assert [list(v) if isinstance(v, (list, tuple)) else v for v in got] == [[64, 64, 1], [32, 32, 64, 64], [256], 10,
                                                                             "bernoulli"]
    assert cfg["dataset"] == "sprites_grid"
    model = vaezoo.get(name)
    convs = [layer for layer in model.encoder.layers if isinstance(layer, keras.layers.Conv2D)]
    assert [(c.filters, c.kernel_size, c.strides) for c in convs] == [(f, (4, 4), (2, 2)) for f in (32, 32, 64, 64)]
    assert model.decode(np.zeros((2, 10), "float32")).shape == (2, 64, 64, 1)


# ---- FactorVAE ---------------------------------------------------------------------------------


def test_permute_dims_keeps_each_marginal_and_breaks_the_dependence():
    rng = np.random.default_rng(0)
    a = rng.standard_normal(4000).astype("float32")
    z = np.stack([a, a + 0.1 * rng.standard_normal(4000).astype("float32"), -a], axis=1)  # strongly dependent
    shuffled = permute_dims(tf.constant(z), tf.constant([1, 2])).numpy()
    for j in range(3):  # every column holds the same values, reordered
        np.testing.assert_array_equal(np.sort(shuffled[:, j]), np.sort(z[:, j]))
    assert abs(np.corrcoef(z.T)[0, 1]) > 0.99
    assert np.abs(np.corrcoef(shuffled.T)[np.triu_indices(3, 1)]).max() < 0.06  # independent columns
    np.testing.assert_array_equal(shuffled, permute_dims(tf.constant(z), tf.constant([1, 2])).numpy())  # seeded
    assert not np.array_equal(shuffled, permute_dims(tf.constant(z), tf.constant([1, 3])).numpy())


def test_factor_vae_trains_its_discriminator_with_its_own_optimizer(tmp_path):
    model = tiny("factor_vae", gamma=10.0)
    x = batch_for(model, n=32)
    model.compile(keras.optimizers.Adam(1e-3))
    assert isinstance(model.auxiliary_optimizer, keras.optimizers.Adam)
    assert model.auxiliary_optimizer.learning_rate.numpy() == pytest.approx(1e-4)  # the paper's Adam
    assert model.auxiliary_optimizer.beta_1 == 0.5 and model.auxiliary_optimizer.beta_2 == 0.9
    discriminator = {id(v) for v in model.discriminator.trainable_variables}
    assert discriminator and not discriminator & {id(v) for v in model.main_variables()}
    before = [v.numpy().copy() for v in model.discriminator.trainable_variables]
    model.fit(tf.data.Dataset.from_tensors(x).repeat(5), epochs=1, verbose=0)
    assert int(model.optimizer.iterations) == int(model.auxiliary_optimizer.iterations) == 5
    assert any(not np.array_equal(b, v.numpy()) for b, v in zip(before, model.discriminator.trainable_variables))
    # The main optimizer holds no slots for the discriminator: it never moves it.
    main_slots = sum(int(np.prod(v.shape)) for v in model.optimizer.variables) - 2  # minus iterations, lr
    assert main_slots == 2 * sum(int(np.prod(v.shape)) for v in model.main_variables())
    # Both optimizers' states survive a save (a resumed run continues the same adversarial game).
    model.save(tmp_path / "factor.keras")
    loaded = keras.models.load_model(tmp_path / "factor.keras")
    assert int(loaded.auxiliary_optimizer.iterations) == 5
    assert loaded.auxiliary_optimizer.beta_1 == 0.5
    for a, b in zip(model.auxiliary_optimizer.variables, loaded.auxiliary_optimizer.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    loaded.fit(tf.data.Dataset.from_tensors(x).repeat(2), epochs=1, verbose=0)
    assert int(loaded.auxiliary_optimizer.iterations) == 7


@pytest.mark.slow
def test_factor_vae_discriminator_detects_dependent_codes():
    # Train the discriminator alone on codes with total correlation (two copies of one variable):
    # its estimate of the TC becomes clearly positive; on independent codes it stays near 0.
    def train(dependent):
        keras.utils.set_random_seed(0)
        model = vaezoo.get("factor_vae", data_shape=[8, 8, 1], architecture="mlp", hidden_units=[8], latent_dim=2,
                           discriminator_units=[32, 32], discriminator_learning_rate=3e-3)
        model.compile(keras.optimizers.Adam(1e-3))
        optimizer = model.auxiliary_optimizer
        rng = np.random.default_rng(0)
        for step in range(300):
            a = rng.standard_normal((256, 1)).astype("float32")
            z = np.concatenate([a, a + 0.1 * rng.standard_normal((256, 1))], 1) if dependent else \
                rng.standard_normal((256, 2)).astype("float32")
            z = tf.constant(z, tf.float32)
            with tf.GradientTape() as tape:
                real = model.discriminator_logits(z)
                fake = model.discriminator_logits(permute_dims(z, tf.constant([step, 0])))
                loss = tf.reduce_mean(0.5 * (tf.nn.softplus(-real) + tf.nn.softplus(fake)))
            optimizer.apply(tape.gradient(loss, model.auxiliary_variables()), model.auxiliary_variables())
        return float(tf.reduce_mean(model.discriminator_logits(z)))

    assert train(dependent=True) > 0.8  # the true TC of this pair is -0.5 log(1 - 0.99) = 2.3 nats
    assert abs(train(dependent=False)) < 0.2


def test_auxiliary_optimizer_refused_for_a_model_without_a_second_network():
    with pytest.raises(ValueError, match=r"VAE has no auxiliary network: auxiliary_optimizer must be None"):
        tiny("vae").compile(keras.optimizers.Adam(), auxiliary_optimizer="sgd")


# ---- beta-TCVAE ----------------------------------------------------------------------------------


def _gaussian_batch(seed, m=2000, sigma=0.5):
    rng = np.random.default_rng(seed)
    means = rng.multivariate_normal([0, 0], [[1, 0.8], [0.8, 1]], m).astype("float32")
    z = (means + sigma * rng.standard_normal(means.shape)).astype("float32")
    return z, means, np.full_like(means, sigma)


def test_mss_estimates_the_decomposition_of_a_known_aggregate_posterior():
    # Posteriors N(mu_n, 0.25 I) with mu_n ~ N(0, S): q(z) = N(0, S + 0.25 I) =: N(0, C), so
    # MI = 0.5 log det C / 0.25^2, TC = 0.5 (sum log diag C - log det C), DWKL = sum KL(N(0, C_jj) || N(0, 1)).
    c = np.array([[1.25, 0.8], [0.8, 1.25]])
    truth = np.array([0.5 * np.log(np.linalg.det(c) / 0.25**2),
                      0.5 * (np.log(np.diag(c)).sum() - np.log(np.linalg.det(c))),
                      sum(0.5 * (c[j, j] - 1 - np.log(c[j, j])) for j in range(2))])  # 1.346, 0.263, 0.027
    for seed in range(3):
        z, means, stddevs = _gaussian_batch(seed)
        log_qz, log_product = aggregate_log_densities(z, means, stddevs, log_importance_weights(2000, 10**6, "mss"))
        log_qz_x = (-0.5 * ((z - means) / stddevs) ** 2 - np.log(stddevs) - 0.5 * np.log(2 * np.pi)).sum(1)
        log_pz = (-0.5 * z**2 - 0.5 * np.log(2 * np.pi)).sum(1)
        estimate = np.array([np.mean(log_qz_x - log_qz), np.mean(log_qz - log_product), np.mean(log_product - log_pz)])
        assert np.all(np.abs(estimate - truth) < [0.07, 0.03, 0.02]), (seed, estimate, truth)


def test_importance_weights():
    for m, n in ((5, 100), (64, 727_280)):
        w = np.exp(log_importance_weights(m, n, "mss").numpy())
        np.testing.assert_allclose(w.sum(axis=1), 1.0, rtol=1e-5)  # each row: a distribution over the batch
        np.testing.assert_allclose(np.diag(w), 1.0 / n, rtol=1e-5)  # the example's own posterior: 1/N
        np.testing.assert_allclose(np.exp(log_importance_weights(m, n, "mws").numpy()), 1.0 / (n * m), rtol=1e-5)
    with pytest.raises(ValueError, match="Unknown estimator 'mvs'; valid choices: mss, mws"):
        log_importance_weights(4, 10, "mvs")


@pytest.mark.parametrize("estimator", ["mss", "mws"])
def test_tcvae_terms_sum_to_the_monte_carlo_kl_and_unit_weights_give_the_vae_objective(estimator):
    model = tiny("beta_tcvae", alpha=1.0, beta=1.0, gamma=1.0, estimator=estimator)
    x = batch_for(model, n=16)
    terms = model.compute_terms(x, seed=3)
    total = terms["mutual_information"] + terms["total_correlation"] + terms["dimensionwise_kl"]
    np.testing.assert_allclose(total, terms["log_qz"][0] - terms["log_pz"][0], rtol=1e-4, atol=1e-3)
    expected = np.mean(terms["reconstruction"]) + np.mean(terms["log_qz"][0] - terms["log_pz"][0])
    np.testing.assert_allclose(float(model.objective(terms)), expected, rtol=1e-5)
    heavy = tiny("beta_tcvae", alpha=1.0, beta=6.0, gamma=1.0, estimator=estimator)
    heavy.set_weights(model.get_weights())
    np.testing.assert_allclose(float(heavy.objective(heavy.compute_terms(x, seed=3))) - float(model.objective(terms)),
                               5.0 * np.mean(terms["total_correlation"]), rtol=1e-4, atol=1e-3)


# ---- DIP-VAE -------------------------------------------------------------------------------------


def test_dip_covariance_and_regularizer():
    rng = np.random.default_rng(0)
    means = rng.multivariate_normal([1, -2, 0], [[2, 0.5, 0], [0.5, 1, 0], [0, 0, 3]], 20000).astype("float32")
    stddevs = np.full_like(means, 0.5)
    cov_i = dip_covariance(means, stddevs, "i").numpy()
    np.testing.assert_allclose(cov_i, np.cov(means.T, bias=True), rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(dip_covariance(means, stddevs, "ii").numpy() - cov_i, 0.25 * np.eye(3), atol=1e-5)
    np.testing.assert_allclose(float(dip_regularizer(tf.eye(3), 10.0, 100.0)), 0.0)  # identity: no penalty
    c = tf.constant([[2.0, 0.5], [0.5, 1.0]])
    np.testing.assert_allclose(float(dip_regularizer(c, 10.0, 100.0)), 10 * 2 * 0.25 + 100 * 1.0)
    with pytest.raises(ValueError, match="Unknown dip_type 'iii'; valid choices: i, ii"):
        dip_covariance(means, stddevs, "iii")


def test_dip_vae_objective_is_the_vae_objective_plus_the_penalty():
    model = tiny("dip_vae", dip_type="ii", lambda_od=3.0, lambda_d=7.0)
    x = batch_for(model, n=16)
    terms = model.compute_terms(x, seed=1)
    penalty = dip_regularizer(dip_covariance(terms["posterior_mean"], terms["posterior_stddev"], "ii"), 3.0, 7.0)
    np.testing.assert_allclose(float(terms["dip_regularizer"]), float(penalty), rtol=1e-5)
    vae = np.mean(terms["reconstruction"]) + np.mean(terms["kl"])
    np.testing.assert_allclose(float(model.objective(terms)), vae + float(penalty), rtol=1e-5)


# ---- data --------------------------------------------------------------------------------------


def test_sprite_grid_data_set_splits():
    grid = data.SpriteGrid(64)
    train, test = grid.split_indices("train"), grid.split_indices("test")
    assert len(test) == 10_000 and len(train) == len(grid) - 10_000
    assert not np.intersect1d(train, test).size
    np.testing.assert_array_equal(train, grid.split_indices("train"))  # fixed
    batch = next(iter(data.load("sprites_grid", batch_size=8, seed=0)))
    assert batch.shape == (8, 64, 64, 1) and batch.dtype == tf.float32
    assert set(np.unique(batch.numpy())) <= {0.0, 1.0}
    first = next(iter(data.load("sprites_grid", split="test", batch_size=4)))
    np.testing.assert_array_equal(first, grid.images(grid.factors_of(test[:4])))  # test: in order, unshuffled
    assert data.load("sprites_grid", batch_size=64, limit=1000).cardinality() == 16
    with pytest.raises(ValueError, match="Unknown split 'valid' of a factor grid; valid choices: train, test"):
        data.load("sprites_grid", split="valid")
