"""VQ-VAE: the quantiser's maths, straight-through gradients, EMA codebooks, restarts, replicas, MNIST."""


import keras
import numpy as np
import pytest
import tensorflow as tf

import vaezoo
from vaezoo import data
from vaezoo.vq import VectorQuantizer

from conftest import batch_for, tiny


def _vq(**kwargs):
    layer = VectorQuantizer(**{"num_codes": 6, "code_dim": 3, "seed": 0, **kwargs})
    layer.build((None, 3))
    return layer


def test_nearest_code_and_straight_through_gradient():
    vq = _vq()
    codebook = np.random.default_rng(0).normal(size=(6, 3)).astype("float32")
    vq.codebook.assign(codebook)
    z = tf.Variable(np.random.default_rng(1).normal(size=(4, 5, 3)).astype("float32"))
    with tf.GradientTape() as tape:
        out = vq(z)
        weighted = tf.reduce_sum(out["quantized"] * tf.range(1.0, 4.0))
    brute = np.argmin(((z.numpy()[..., None, :] - codebook) ** 2).sum(-1), axis=-1)
    np.testing.assert_array_equal(out["indices"], brute)
    np.testing.assert_allclose(out["quantized"], codebook[brute], rtol=1e-6)  # forward: the codes
    grad = tape.gradient(weighted, z).numpy()  # backward: identity, as if quantisation were absent
    np.testing.assert_allclose(grad, np.broadcast_to([1.0, 2.0, 3.0], grad.shape))
    err = ((z.numpy() - codebook[brute]) ** 2).mean(axis=(1, 2))
    np.testing.assert_allclose(out["commitment"], 0.25 * err, rtol=1e-5)
    np.testing.assert_allclose(out["codebook"], err, rtol=1e-5)


def test_perplexity_and_usage():
    vq = _vq()
    vq.codebook.assign(np.eye(6, 3, dtype="float32") * 10 + np.arange(6)[:, None].astype("float32"))
    z = vq.lookup(tf.constant([[0, 1, 2, 3], [0, 1, 2, 3]]))  # 4 codes, used equally
    out = vq(z)
    assert float(out["perplexity"]) == pytest.approx(4.0, rel=1e-4)
    assert float(out["usage"]) == pytest.approx(4 / 6)


def test_ema_update_moves_codes_to_the_mean_of_their_vectors():
    vq = _vq(ema=True, decay=0.0, epsilon=1e-8)
    assert not vq.codebook.trainable
    old = vq.codebook.numpy()
    z = tf.constant(np.random.default_rng(2).normal(size=(40, 3)).astype("float32"))
    idx = vq.indices(z).numpy()
    out = vq(z, training=True)
    assert float(tf.reduce_sum(out["codebook"])) == 0.0  # no codebook loss with EMA
    new = vq.codebook.numpy()
    for k in range(6):
        if (idx == k).any():
            np.testing.assert_allclose(new[k], z.numpy()[idx == k].mean(0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(vq.ema_cluster_size.numpy(), np.bincount(idx, minlength=6))
    assert not np.allclose(old, new)
    vq(z, training=False)  # inference never updates
    np.testing.assert_array_equal(vq.codebook.numpy(), new)


def test_dead_codes_are_restarted_from_encoder_outputs():
    vq = _vq(restart_after=2)
    codebook = np.zeros((6, 3), "float32")
    codebook[5] = 100.0  # far from every input: never chosen
    vq.codebook.assign(codebook)
    z = tf.constant(np.random.default_rng(3).normal(size=(30, 3)).astype("float32"))
    vq(z, training=True)
    assert np.all(vq.codebook.numpy()[5] == 100.0) and vq.steps_unused.numpy()[5] == 1
    vq(z, training=True)
    restarted = vq.codebook.numpy()[5]
    assert np.min(np.abs(z.numpy() - restarted).sum(1)) < 1e-6  # now one of the encoder outputs
    assert vq.steps_unused.numpy()[5] == 0


def test_layer_serialization_round_trip():
    vq = _vq(ema=True, restart_after=7, beta=0.5)
    clone = keras.layers.deserialize(keras.layers.serialize(vq))
    assert clone.get_config() == vq.get_config()


def test_straight_through_feeds_the_encoder_from_the_reconstruction_loss():
    model = tiny("vq_vae")
    x = batch_for(model, n=8)
    with tf.GradientTape() as tape:
        rec = tf.reduce_mean(model.compute_terms(x)["reconstruction"])
    grads = tape.gradient(rec, model.encoder.trainable_variables)
    assert all(g is not None for g in grads)
    assert all(float(tf.reduce_max(tf.abs(g))) > 0 for g in grads)


def test_gradient_trained_codebook_reports_codebook_loss():
    model = tiny("vq_vae", ema=False)
    assert "codebook" in model.metric_names and model.quantizer.codebook.trainable
    x = batch_for(model, n=8)
    model.compile(keras.optimizers.Adam(1e-3))
    before = model.quantizer.codebook.numpy()
    history = model.fit(tf.data.Dataset.from_tensors(x).repeat(3), verbose=0)
    assert history.history["codebook"][0] > 0 and not np.allclose(before, model.quantizer.codebook.numpy())
    assert "codebook" not in tiny("vq_vae", ema=True).metric_names


def test_codes_api_and_ema_state_survive_a_keras_round_trip(tmp_path):
    model = tiny("vq_vae", ema=True)
    x = batch_for(model, n=8)
    model.compile(keras.optimizers.Adam(1e-3))
    model.fit(tf.data.Dataset.from_tensors(x).repeat(3), verbose=0)
    codes = model.encode(x)
    assert codes.dtype == tf.int32 and codes.shape == (8, 7, 7)
    assert int(tf.reduce_min(codes)) >= 0 and int(tf.reduce_max(codes)) < model.num_codes
    np.testing.assert_allclose(model.decode_indices(codes), model.reconstruct(x), rtol=1e-5, atol=1e-6)
    model.save(tmp_path / "vq.keras")
    loaded = keras.models.load_model(tmp_path / "vq.keras")
    assert float(tf.reduce_sum(loaded.quantizer.ema_cluster_size)) > 0
    for name in ("codebook", "ema_cluster_size", "ema_sum", "steps_unused"):
        np.testing.assert_array_equal(getattr(loaded.quantizer, name).numpy(), getattr(model.quantizer, name).numpy())
    np.testing.assert_array_equal(loaded.encode(x), codes)


# Replicated training (EMA statistics summed, restarts from the global batch): tests/test_distribute.py.


def test_vqvae2_top_reconstruction_term_trains_the_top_codes_to_hold_the_image(tmp_path):
    """``top_reconstruction_weight``: the objective adds lambda * -log p(x | top codes alone) through a decoder of the
    top codes only, whose gradient reaches the top encoder but not the bottom path; off, no such decoder or metric."""
    plain = tiny("vq_vae2")
    assert plain.top_only_decoder is None and "top_reconstruction" not in plain.metric_names
    model = tiny("vq_vae2", top_reconstruction_weight=0.5)
    assert "top_reconstruction" in model.metric_names and model.get_config()["top_reconstruction_weight"] == 0.5
    x = batch_for(model, n=4)
    terms = model.compute_terms(x)
    expected = tf.reduce_mean(terms["reconstruction"] + terms["commitment"] + terms["codebook"]
                              + 0.5 * terms["top_reconstruction"])
    np.testing.assert_allclose(float(model.objective(terms)), float(expected), rtol=1e-6)
    top_only = model.likelihood_layer(model.top_only_decoder(model.top_quantizer.lookup(model.encode(x)[0])))
    np.testing.assert_allclose(terms["top_reconstruction"], -top_only.log_prob(x), rtol=1e-5)
    with tf.GradientTape() as tape:
        term = tf.reduce_mean(model.compute_terms(x)["top_reconstruction"])
    top_grads = tape.gradient(term, model.top_encoder.trainable_variables + model.top_only_decoder.trainable_variables)
    assert all(g is not None and float(tf.reduce_max(tf.abs(g))) > 0 for g in top_grads)
    with tf.GradientTape() as tape:
        term = tf.reduce_mean(model.compute_terms(x)["top_reconstruction"])
    assert all(g is None for g in tape.gradient(term, model.decoder.trainable_variables
                                                 + model.bottom_projection.trainable_variables))
    model.compile(keras.optimizers.Adam(1e-3))
    logs = model.fit(tf.data.Dataset.from_tensors(x).repeat(2), verbose=0).history
    assert "top_reconstruction" in logs and np.isfinite(logs["top_reconstruction"][-1])
    model.save(tmp_path / "vq2.keras")
    loaded = keras.models.load_model(tmp_path / "vq2.keras")
    for a, b in zip(model.top_only_decoder.weights, loaded.top_only_decoder.weights, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    with pytest.raises(ValueError, match="top_reconstruction_weight"):
        vaezoo.get("vq_vae2", top_reconstruction_weight=-1.0)


def test_mnist_reconstruction_falls_and_codes_do_not_collapse(data_dir):
    keras.utils.set_random_seed(0)
    model = vaezoo.get("vq_vae", seed=0)
    train = data.load("mnist", "train", batch_size=64, data_dir=data_dir, binarize="dynamic", seed=0, limit=3000)
    test = data.load("mnist", "test", batch_size=500, data_dir=data_dir, binarize="dynamic", seed=1, limit=1000)
    model.compile(keras.optimizers.Adam(1e-3))
    before = model.evaluate(test, return_dict=True, verbose=0)
    model.fit(train, epochs=2, verbose=0)
    after = model.evaluate(test, return_dict=True, verbose=0)
    assert after["reconstruction"] < 0.5 * before["reconstruction"], (before, after)
    assert after["perplexity"] > 8, after  # of 64 codes: far from collapse to one
    assert after["codes_used"] > 0.25, after


def test_vqvae2_two_levels_with_the_bottom_conditioned_on_the_top():
    model = tiny("vq_vae2")
    x = batch_for(model, n=4)
    top, bottom = model.encode(x)
    assert top.shape == (4, 7, 7) and bottom.shape == (4, 14, 14) and top.dtype == tf.int32
    np.testing.assert_allclose(model.decode_indices(top, bottom), model.reconstruct(x), rtol=1e-5, atol=1e-6)
    # The bottom level's input depends on the top path (encoder and top decoder)...
    with tf.GradientTape() as tape:
        h_b = model.bottom_encoder(x)
        vq_t = model.top_quantizer(model.top_encoder(h_b))
        z_b = model.bottom_projection(tf.concat([h_b, model.top_decoder(vq_t["quantized"])], -1))
        total = tf.reduce_sum(z_b)
    grads = tape.gradient(total, model.top_encoder.trainable_variables + model.top_decoder.trainable_variables)
    assert all(g is not None and float(tf.reduce_max(tf.abs(g))) > 0 for g in grads)
    # ...and the decoder uses both code maps.
    other_top = (top + 1) % model.num_codes
    assert not np.allclose(model.decode_indices(other_top, bottom), model.decode_indices(top, bottom))
    # Straight-through: the reconstruction loss reaches both encoders.
    with tf.GradientTape() as tape:
        rec = tf.reduce_mean(model.compute_terms(x)["reconstruction"])
    grads = tape.gradient(rec, model.bottom_encoder.trainable_variables + model.top_encoder.trainable_variables)
    assert all(g is not None and float(tf.reduce_max(tf.abs(g))) > 0 for g in grads)
