"""The gated PixelCNN prior over codes: causality, no blind spot, training, sampling with a VQ-VAE."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import vaezoo
from vaezoo import cli, data
from vaezoo.models.pixelcnn import GatedPixelCNNBlock, MaskedConv2D

from conftest import batch_for, tiny


def _prior(**kw):
    return vaezoo.get("pixelcnn_prior", **{"code_shape": [5, 5], "num_codes": 6, "channels": 8, "num_blocks": 3,
                                           "seed": 0, **kw})


def test_each_code_depends_only_on_the_codes_before_it():
    prior = _prior()
    h, w = prior.code_shape
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 6, (1, h, w)).astype("int32")
    base = prior(codes).numpy()
    for i in range(h):
        for j in range(w):
            later = codes.copy().reshape(-1)
            later[i * w + j :] = rng.integers(0, 6, h * w - i * w - j)  # this position and all after it
            out = prior(later.reshape(1, h, w)).numpy()
            np.testing.assert_allclose(out[0, i, j], base[0, i, j], rtol=1e-5, atol=1e-6, err_msg=f"({i}, {j})")


@pytest.mark.parametrize("offset", [(0, -1), (-1, 0), (-1, 1), (-1, -1), (-2, 2)])
def test_no_blind_spot(offset):
    """Codes above-right, above and to the left all reach position (2, 2) (the gated stacks' point)."""
    prior = _prior()
    codes = np.zeros((1, 5, 5), "int32")
    base = prior(codes).numpy()[0, 2, 2]
    codes[0, 2 + offset[0], 2 + offset[1]] = 3
    assert np.max(np.abs(prior(codes).numpy()[0, 2, 2] - base)) > 1e-6


def test_nll_is_the_sum_of_code_cross_entropies():
    prior = _prior()
    codes = np.random.default_rng(1).integers(0, 6, (4, 5, 5)).astype("int32")
    terms = prior.compute_terms(codes)
    logp = tf.nn.log_softmax(prior(codes)).numpy()
    expected = -np.take_along_axis(logp, codes[..., None], -1).sum((1, 2, 3))
    np.testing.assert_allclose(terms["nll"], expected, rtol=1e-5)
    np.testing.assert_allclose(terms["bits_per_dim"], expected / (25 * np.log(2)), rtol=1e-5)


def test_samples_follow_what_the_prior_learned():
    prior = _prior()
    codes = np.tile(np.array([[1, 4, 1, 4, 1]], "int32"), (64, 5, 1))  # every map the same stripes
    prior.compile(keras.optimizers.Adam(1e-2))
    prior.fit(tf.data.Dataset.from_tensors(codes).repeat(60), verbose=0)
    drawn = prior.sample(8, seed=3).numpy()
    assert drawn.shape == (8, 5, 5) and drawn.dtype == np.int32
    assert np.mean(drawn == codes[:8]) > 0.9
    np.testing.assert_array_equal(drawn, prior.sample(8, seed=3).numpy())  # seeded


def test_bad_codes_are_rejected():
    prior = _prior()
    with pytest.raises(TypeError, match="integer code maps"):
        prior(np.zeros((1, 5, 5), "float32"))
    with pytest.raises(ValueError, match=r"code maps of shape \(batch, 5, 5\)"):
        prior(np.zeros((1, 7, 7), "int32"))


def test_layers_serialize():
    for layer in (MaskedConv2D(4, (3, 3), "vertical"), GatedPixelCNNBlock(4, 3, first=True)):
        clone = keras.layers.deserialize(keras.layers.serialize(layer))
        assert clone.get_config() == layer.get_config()


def test_vqvae_samples_through_a_prior():
    vq = tiny("vq_vae")
    prior = vaezoo.get("pixelcnn_prior", code_shape=list(vq.code_shape), num_codes=vq.num_codes, channels=8,
                       num_blocks=2)
    images = vq.sample(3, seed=1, prior=prior)
    assert images.shape == (3, 28, 28, 1)
    with pytest.raises(ValueError, match="this VQ-VAE has"):
        vq.sample(2, prior=_prior())


def test_cli_trains_a_prior_on_a_vqvae_and_samples(tmp_path, capsys):
    vq = tiny("vq_vae", data_shape=[32, 32, 1])
    vq.save(tmp_path / "vq.keras")
    out = tmp_path / "prior"
    assert cli.main(["train", "pixelcnn_prior", "--vqvae", str(tmp_path / "vq.keras"), "--dataset", "sprites",
                     "--binarize", "none", "--set", "channels=8", "--set", "num_blocks=2", "--epochs", "1",
                     "--limit", "128", "--out", str(out), "--verbose", "0"]) == 0
    prior = keras.models.load_model(out / "model.keras")
    assert prior.code_shape == vq.code_shape and prior.num_codes == vq.num_codes
    assert (out / "samples.png").is_file()
    grid = tmp_path / "grid.png"
    assert cli.main(["sample", "vq_vae", "--checkpoint", str(tmp_path / "vq.keras"), "--prior",
                     str(out / "model.keras"), "--dataset", "sprites", "--binarize", "none", "--out", str(grid)]) == 0
    assert grid.is_file()
    codes_ds = data.codes_dataset(vq, data.load("sprites", "test", batch_size=16, limit=32))
    assert next(iter(codes_ds)).shape == (16, 8, 8)
