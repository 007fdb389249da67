"""The conditional VAE (cvae): the label conditions q and p, the bound by hand, errors, log p(x|y), the CLI."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

import vaezoo
from vaezoo import cli, evaluate

from conftest import batch_for, tiny


def test_labels_condition_the_decoder_as_written():
    model = tiny("cvae", seed=0)
    z = np.random.default_rng(0).normal(size=(3, model.latent_dim)).astype("float32")
    labels = np.array([0, 1, 1], "int32")
    expected = tf.sigmoid(model.decoder(np.concatenate([z, np.eye(model.num_classes, dtype="float32")[labels]], -1)))
    np.testing.assert_allclose(model.decode(z, labels=labels), expected, rtol=1e-5, atol=1e-6)
    assert not np.allclose(model.decode(z, labels=[0, 0, 0]), model.decode(z, labels=[1, 1, 1]))


def test_conditional_prior_kl_is_the_closed_form_of_q_against_p_z_given_y():
    model = tiny("cvae", conditional_prior=True, seed=0)
    model.prior_loc.assign(np.random.default_rng(1).normal(size=model.prior_loc.shape).astype("float32"))
    model.prior_log_scale.assign(0.3 * np.ones(model.prior_log_scale.shape, "float32"))
    x = batch_for(model, n=4)
    terms = model.compute_terms(x, seed=3)
    q = model.posterior_distribution(x)
    y = model.label_vector(x["labels"])
    tfd = tfp.distributions
    p = tfd.Independent(tfd.Normal(tf.matmul(y, model.prior_loc), tf.exp(tf.matmul(y, model.prior_log_scale))), 1)
    np.testing.assert_allclose(terms["kl"], tfp.distributions.kl_divergence(q, p), rtol=1e-5)
    z = q.sample(20000, seed=(1, 2))
    np.testing.assert_allclose(np.mean(q.log_prob(z) - p.log_prob(z), 0), terms["kl"], atol=0.05)


def test_the_three_ways_to_give_labels_train_and_agree():
    model = tiny("cvae", seed=0)
    batch = batch_for(model, n=8)
    model.compile("adam")
    for data in ({"x": batch}, {"x": batch["images"], "y": batch["labels"]},
                 {"x": tf.data.Dataset.from_tensor_slices((batch["images"], batch["labels"])).batch(4)}):
        history = model.fit(**data, epochs=1, batch_size=4, verbose=0)
        assert np.isfinite(history.history["loss"][-1])
    ll_dict = evaluate.log_likelihood(model, batch, num_samples=20, batch_size=8)
    ll_pair = evaluate.log_likelihood(model, (batch["images"], batch["labels"]), num_samples=20, batch_size=8)
    np.testing.assert_allclose(ll_dict.per_example, ll_pair.per_example, rtol=1e-6)
    elbo = model.elbo(batch, seed=0).numpy()
    assert np.mean(ll_dict.per_example) > np.mean(elbo) - 1.0  # log p(x|y) >= the ELBO, up to the noise


@pytest.mark.parametrize("call,match", [
    (lambda m, b: m.compile("adam") or m.fit(b["images"], epochs=1, verbose=0), "give \\(images, labels\\)"),
    (lambda m, b: m.elbo({"images": b["images"], "labels": b["labels"] + 5}), "labels must lie in 0...1, got 5"),
    (lambda m, b: m.elbo({"images": b["images"], "labels": b["labels"][:2]}), "4 images but 2 labels"),
    (lambda m, b: m.elbo(b["images"]), "give the labels"),
    (lambda m, b: m.decode(np.zeros((2, m.latent_dim), "float32")), "pass labels="),
    (lambda m, b: m.sample(3, labels=[0, 1]), "needs 3 labels, got 2"),
    (lambda m, b: m.elbo({"images": b["images"], "labels": np.full((4, 2), 0.7, "float32")}), "class probabilities"),
])
def test_bad_labels_are_named(call, match):
    model = tiny("cvae")
    with pytest.raises(ValueError, match=match):
        call(model, batch_for(model, n=4))


def test_priors_without_labels_are_refused():
    with pytest.raises(vaezoo.ConfigError, match="vamp"):
        tiny("cvae", prior="vamp")
    with pytest.raises(vaezoo.ConfigError, match="prior must then be 'normal'"):
        tiny("cvae", prior="mixture", conditional_prior=True)


def test_class_grid_has_one_row_per_class():
    model = tiny("cvae")
    grid = model.class_grid(per_class=3, seed=0, classes=[1, 0])
    assert grid.shape == (2, 3, *model.data_shape)
    assert not np.allclose(grid[0], grid[1])


def test_parse_labels():
    assert cli.parse_labels("0-3,7", 10) == [0, 1, 2, 3, 7]
    for bad in ("0-12", "a", "5-2"):
        with pytest.raises(cli.UsageError):
            cli.parse_labels(bad, 10)


def test_cli_trains_and_samples_a_cvae_on_a_labelled_npz(tmp_path, capsys):
    model = tiny("cvae")
    batch = batch_for(model, n=64)
    np.savez(tmp_path / "mine.npz", x=(batch["images"][..., 0] * 255).astype("uint8"), y=batch["labels"])
    out = tmp_path / "run"
    args = ["train", "cvae", "--data", str(tmp_path / "mine.npz"), "--set", "latent_dim=2", "--set",
            "hidden_units=[16]", "--set", "num_classes=2", "--epochs", "1", "--batch-size", "16", "--out", str(out),
            "--verbose", "0"]
    assert cli.main(args) == 0
    assert (out / "samples.png").is_file() and (out / "samples_reconstructions.png").is_file()
    assert cli.main(["sample", "cvae", "--checkpoint", str(out / "model.keras"), "--labels", "1",
                     "--out", str(tmp_path / "one.png")]) == 0
    from PIL import Image
    assert Image.open(tmp_path / "one.png").size[0] > Image.open(tmp_path / "one.png").size[1]  # one row of 10
    assert cli.main(["sample", "cvae", "--checkpoint", str(out / "model.keras"), "--labels", "0-5",
                     "--out", str(tmp_path / "bad.png")]) == 2
    assert "outside 0..1" in capsys.readouterr().err
