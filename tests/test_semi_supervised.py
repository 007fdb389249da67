"""M2 (Kingma et al. 2014): the unlabelled bound sums the label out, log_weights estimate log p(x), mixed batches."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

import vaezoo
from vaezoo import data, evaluate

from conftest import batch_for, tiny

SEED = tf.constant([3, 4])


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(0)
    return vaezoo.get("m2", latent_dim=3, hidden_units=[16], classifier_units=[16], num_classes=3,
                      data_shape=[8, 8, 1], seed=0)


def images(n=6, seed=0):
    return (np.random.default_rng(seed).uniform(size=(n, 8, 8, 1)) < 0.4).astype("float32")


def test_unlabelled_bound_sums_the_labelled_bounds_under_the_classifier(model):
    x = images()
    u = model.compute_terms(x, seed=SEED)  # no labels: every example unlabelled
    q = np.asarray(model.classify(x), "float64")
    # L(x, c) for every class, from the same per-class draws (the noise of row i * C + c).
    labelled = np.stack([np.asarray(model.compute_terms(x, seed=SEED, condition=np.full(6, c))["elbo"])
                         for c in range(3)], axis=1)
    entropy = -(q * np.log(q)).sum(axis=1)
    np.testing.assert_allclose(np.asarray(u["elbo"]), (q * labelled).sum(axis=1) + entropy, rtol=1e-5, atol=1e-4)
    # L(x, c) itself: the conditional ELBO plus log p(y) = -log C.
    cvae = vaezoo.VAE.compute_terms(model, tf.repeat(x, 3, axis=0), seed=SEED,
                                    condition=tf.tile(tf.eye(3), [6, 1]))["elbo"]
    np.testing.assert_allclose(labelled, np.reshape(cvae, (6, 3)) - math.log(3), rtol=1e-5, atol=1e-4)
    assert float(u["labelled"]) == 0.0 and float(u["classification"]) == 0.0


def test_mixed_batch_terms_and_loss(model):
    x, y = images(), np.array([0, -1, 2, -1, -1, 1])
    terms = model.compute_terms(x, seed=SEED, condition=y)
    alone_l = model.compute_terms(x, seed=SEED, condition=np.array([0, 0, 2, 0, 0, 1]))["elbo"]
    alone_u = model.compute_terms(x, seed=SEED)["elbo"]
    mask = y >= 0
    np.testing.assert_allclose(np.asarray(terms["elbo"])[mask], np.asarray(alone_l)[mask], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(terms["elbo"])[~mask], np.asarray(alone_u)[~mask], rtol=1e-6)
    np.testing.assert_allclose(-np.asarray(terms["elbo"]), terms["reconstruction"] + terms["kl"], rtol=1e-5)
    log_q = np.log(np.asarray(model.classify(x), "float64"))
    expected_ce = -np.mean(log_q[mask, y[mask]])  # the labelled examples only
    assert float(terms["classification"]) == pytest.approx(expected_ce, rel=1e-5)
    assert float(terms["labelled"]) == pytest.approx(0.5)
    loss = -np.mean(terms["elbo"]) + model.alpha * expected_ce
    assert float(model.objective(terms)) == pytest.approx(loss, rel=1e-5)


def test_log_weights_estimate_the_marginal_likelihood_above_the_bound(model):
    x = images(4, seed=1)
    log_w = np.asarray(model.log_weights(x, 20000, seed=SEED), "float64")  # y ~ q(y|x), z ~ q(z|x, y)
    # E[log w] is the unlabelled bound U(x) (same proposal), which compute_terms draws one z per class for.
    bound = np.mean([np.asarray(model.compute_terms(x, seed=tf.constant([s, 1]))["elbo"]) for s in range(200)], axis=0)
    se = log_w.std(axis=0) / math.sqrt(log_w.shape[0])
    np.testing.assert_allclose(log_w.mean(axis=0), bound, atol=5 * se.max() + 0.05)
    log_px = np.logaddexp.reduce(log_w, axis=0) - math.log(log_w.shape[0])
    assert np.all(log_px >= bound - 1e-3)  # Jensen: the importance estimate lies above the bound
    # evaluate.log_likelihood ignores the labels (the marginal log p(x)): the same estimate as from images alone.
    with_labels = evaluate.log_likelihood(model, tf.data.Dataset.from_tensors((x, np.array([0, 1, -1, 2]))),
                                          num_samples=2000)
    alone = evaluate.log_likelihood(model, x, num_samples=2000)
    np.testing.assert_array_equal(with_labels.per_example, alone.per_example)
    np.testing.assert_allclose(-alone.nll, log_px.mean(), atol=1.0)  # an untrained q: heavy-tailed weights


@pytest.mark.parametrize("labels,needle", [
    (np.array([0, 3, -1, 1, 2, 0]), r"0\.\.\.2, or be -1 for an unlabelled example; got 3"),
    (np.array([0, -2, 1, 1, 2, 0]), "got -2"),
    (np.array([0, 1, 2]), "6 images but 3 labels"),
    (np.array([0.5] * 6), "integer labels"),
])
def test_bad_labels_are_named(model, labels, needle):
    with pytest.raises((ValueError, TypeError), match=needle):
        model.elbo({"images": images(), "labels": labels})


def test_unlabelled_images_are_encoded_under_the_classifiers_guess(model):
    x = images()
    guess = np.argmax(model.classify(x), axis=-1)
    np.testing.assert_allclose(model.encode(x)[0], model.encode({"images": x, "labels": guess})[0], atol=1e-6)
    mixed = np.where(np.arange(6) % 2 == 0, -1, (guess + 1) % 3)
    expected = np.where(mixed >= 0, mixed, guess)
    np.testing.assert_allclose(model.encode({"images": x, "labels": mixed})[0],
                               model.encode({"images": x, "labels": expected})[0], atol=1e-6)


def test_config_errors():
    with pytest.raises(vaezoo.config.ConfigError, match="conditional_prior"):
        vaezoo.get("m2", conditional_prior=True)
    with pytest.raises(vaezoo.config.ConfigError, match="architecture must be 'mlp'"):
        vaezoo.get("m2", architecture="conv")
    with pytest.raises(vaezoo.config.ConfigError, match="num_samples"):
        vaezoo.get("m2", num_samples=5)


def test_trains_on_semi_supervised_batches(data_dir):
    ds = data.semi_supervised("mnist", num_labels=20, batch_size=50, data_dir=data_dir, seed=0)
    model = tiny("m2", num_classes=10)
    model.compile(keras.optimizers.Adam(1e-3))
    history = model.fit(ds.take(6), epochs=2, verbose=0).history
    assert history["labelled"][0] == pytest.approx(5 / 55)  # 50 unlabelled beside 5 labelled per batch
    assert all(np.isfinite(v).all() for v in history.values())
    assert history["loss"][-1] < history["loss"][0]
    # Unlabelled data alone trains too (the classifier through the bound only).
    history = model.fit(tf.data.Dataset.from_tensors(batch_for(model)["images"]), epochs=1, verbose=0).history
    assert history["labelled"] == [0.0] and history["classification"] == [0.0]


def test_cli_trains_m2_with_a_few_labels_of_an_npz(tmp_path, capsys):
    from vaezoo import cli

    model = tiny("m2")
    batch = batch_for(model, n=80)
    np.savez(tmp_path / "mine.npz", x=(batch["images"][..., 0] * 255).astype("uint8"), y=batch["labels"])
    out = tmp_path / "run"
    args = ["train", "m2", "--data", str(tmp_path / "mine.npz"), "--set", "latent_dim=2", "--set",
            "hidden_units=[16]", "--set", "classifier_units=[16]", "--set", "num_classes=2", "--set", "num_labels=10",
            "--epochs", "1", "--batch-size", "20", "--out", str(out), "--verbose", "0"]
    assert cli.main(args) == 0
    import csv
    with open(out / "history.csv") as f:
        row = next(csv.DictReader(f))
    # Batches of up to 20 unlabelled examples beside 2 labelled ones (the 10 labels, 5 per class, cycled).
    assert 2 / 22 <= float(row["labelled"]) <= 0.5 and float(row["classification"]) > 0
    assert (out / "samples.png").is_file() and (out / "model.keras").is_file()
    assert cli.main([*args[:-4], "--limit", "40", "--out", str(tmp_path / "limited")]) == 2
    assert "limit= (--limit) does not combine with num_labels=10" in capsys.readouterr().err
    assert cli.main([*args[:12], "--set", "num_labels=7", *args[14:-2], "--out", str(tmp_path / "odd")]) == 2
    assert "num_labels=7 must be a multiple of the 2 classes" in capsys.readouterr().err
