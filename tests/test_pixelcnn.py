"""Gated PixelCNN priors over codes: causality, no blind spot, conditioning, training, sampling with VQ-VAEs."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import vaezoo
from vaezoo import cli, data
from vaezoo.models.pixelcnn import GatedPixelCNN, GatedPixelCNNBlock, MaskedConv2D

from conftest import tiny


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


@pytest.mark.parametrize("kernel_size,num_blocks,conditional", [(3, 2, False), (5, 2, False), (3, 3, True)])
def test_logits_of_a_row_need_only_reach_rows_above_it(kernel_size, num_blocks, conditional):
    """The sampler's window: row i's logits computed on rows i - reach .. i equal those of the whole map, and one
    row fewer changes them (``reach`` is the receptive field, not a bound)."""
    h = w = 12
    kwargs = dict(condition_shape=(6, 6), condition_codes=4) if conditional else {}
    net = GatedPixelCNN((h, w), 6, channels=8, num_blocks=num_blocks, kernel_size=kernel_size, **kwargs)
    assert net.reach == 1 + num_blocks * (kernel_size // 2)
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 6, (2, h, w)).astype("int32")
    features = net.condition_features(rng.integers(0, 4, (2, 6, 6)).astype("int32")) if conditional else None
    full = net(codes, condition_features=features).numpy()
    i = h - 1
    for start, exact in ((i - net.reach, True), (i - net.reach + 1, False)):
        window = net(codes[:, start:], condition_features=None if features is None else features[:, start:])
        same = np.allclose(window.numpy()[:, i - start], full[:, i], rtol=1e-5, atol=1e-6)
        assert same == exact, (start, net.reach)


def test_windowed_sampler_draws_what_the_whole_map_draws():
    """The sampler (a window of ``reach`` rows per step, condition features computed once) against a plain loop
    that runs the network on the whole map at every position, with the same uniform noise."""
    from vaezoo.layers import categorical_from_uniform

    prior = vaezoo.get("hierarchical_pixelcnn_prior", top_shape=[4, 4], bottom_shape=[8, 8], num_codes=5,
                       channels=8, num_blocks=2, seed=0)
    rng = np.random.default_rng(1)
    top_noise, bottom_noise = rng.random((4, 4, 4)).astype("float32"), rng.random((4, 8, 8)).astype("float32")
    drawn = prior.sample_from_noise(top_noise, bottom_noise)

    def reference(network, noise, condition=None):
        codes = np.zeros(noise.shape, "int32")
        for i in range(noise.shape[1]):
            for j in range(noise.shape[2]):
                logits = network(codes, condition)[:, i, j]
                codes[:, i, j] = categorical_from_uniform(logits, noise[:, i, j]).numpy()
        return codes

    top = reference(prior.top_network, top_noise)
    np.testing.assert_array_equal(drawn["top"].numpy(), top)
    np.testing.assert_array_equal(drawn["bottom"].numpy(), reference(prior.bottom_network, bottom_noise, top))
    assert prior.bottom_network.reach < 8  # the window is smaller than the map: the test covers the crop


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
    for layer in (MaskedConv2D(4, (3, 3), "vertical"), GatedPixelCNNBlock(4, 3, first=True),
                  GatedPixelCNNBlock(4, 3, conditional=True),
                  GatedPixelCNN((4, 6), 5, 8, 2, condition_shape=(2, 3), condition_codes=7)):
        clone = keras.layers.deserialize(keras.layers.serialize(layer))
        assert clone.get_config() == layer.get_config()


def test_vqvae_samples_through_a_prior():
    vq = tiny("vq_vae")
    prior = vaezoo.get("pixelcnn_prior", code_shape=list(vq.code_shape), num_codes=vq.num_codes, channels=8,
                       num_blocks=2)
    images = vq.sample(3, seed=1, prior=prior)
    assert images.shape == (3, 28, 28, 1)
    with pytest.raises(ValueError, match=r"this VQVAE has .*train a 'pixelcnn_prior'"):
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


# ---- VQ-VAE-2's hierarchical prior: p(top) p(bottom | top) ------------------------------------

def _prior2(**kw):
    return vaezoo.get("hierarchical_pixelcnn_prior", **{"top_shape": [3, 3], "bottom_shape": [6, 6], "num_codes": 5,
                                                        "channels": 8, "num_blocks": 2, "seed": 0, **kw})


def _upsample(top):
    return np.repeat(np.repeat(top, 2, axis=1), 2, axis=2)


def test_hierarchical_prior_causality_and_conditioning():
    prior = _prior2()
    rng = np.random.default_rng(0)
    codes = {"top": rng.integers(0, 5, (1, 3, 3)).astype("int32"), "bottom": rng.integers(0, 5, (1, 6, 6)).astype("int32")}
    base = {k: v.numpy() for k, v in prior(codes).items()}
    # Bottom position (i, j) depends on the bottom codes before it only ...
    for i, j in [(0, 0), (2, 3), (5, 5)]:
        later = codes["bottom"].copy().reshape(-1)
        later[i * 6 + j :] = (later[i * 6 + j :] + 1 + rng.integers(0, 4, later.size - i * 6 - j)) % 5
        out = prior({"top": codes["top"], "bottom": later.reshape(1, 6, 6)})
        np.testing.assert_allclose(out["bottom"][0, i, j], base["bottom"][0, i, j], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(out["top"], base["top"], rtol=1e-6)  # the top never sees the bottom
    # ... and on the top codes, from the very first position on.
    out = prior({"top": (codes["top"] + 1) % 5, "bottom": codes["bottom"]})
    assert np.max(np.abs(out["bottom"][0, 0, 0] - base["bottom"][0, 0, 0])) > 1e-6
    terms = prior.compute_terms(codes)
    np.testing.assert_allclose(terms["nll"], terms["nll_top"] + terms["nll_bottom"], rtol=1e-6)
    np.testing.assert_allclose(terms["bits_per_dim"], terms["nll"] / ((9 + 36) * np.log(2)), rtol=1e-6)


def test_hierarchical_prior_learns_bottom_codes_from_the_top():
    """Bottom maps are the upsampled top maps and the top maps are random: only a bottom prior that
    uses the top codes can get the bottom right (an unconditional one could not beat chance)."""
    prior = _prior2(channels=16)
    rng = np.random.default_rng(1)
    def batch(n):
        top = rng.integers(0, 5, (n, 3, 3)).astype("int32")
        return {"top": top, "bottom": _upsample(top)}
    prior.compile(keras.optimizers.Adam(1e-2))
    prior.fit(tf.data.Dataset.from_tensor_slices(batch(64 * 50)).batch(64), verbose=0)
    terms = prior.compute_terms(batch(64))
    assert float(np.mean(terms["nll_bottom"])) < 0.1 * 36 * np.log(5)  # chance: 36 log 5 nats
    drawn = prior.sample(8, seed=3)
    assert drawn["top"].shape == (8, 3, 3) and drawn["bottom"].shape == (8, 6, 6)
    assert np.mean(drawn["bottom"].numpy() == _upsample(drawn["top"].numpy())) > 0.9
    assert len(np.unique(drawn["top"].numpy())) > 1  # top codes drawn, not one mode
    for a, b in zip(drawn.values(), prior.sample(8, seed=3).values()):
        np.testing.assert_array_equal(a, b)  # seeded


def test_hierarchical_prior_rejects_bad_codes():
    prior = _prior2()
    top, bottom = np.zeros((2, 3, 3), "int32"), np.zeros((2, 6, 6), "int32")
    with pytest.raises(ValueError, match=r"dict of code maps with keys \['top', 'bottom'\].*got shape \(2, 6, 6\)"):
        prior(bottom)
    with pytest.raises(ValueError, match=r"got keys \['bottom', 'middle'\]"):
        prior({"bottom": bottom, "middle": top})
    with pytest.raises(ValueError, match=r"bottom code maps of shape \(batch, 6, 6\), got \(2, 3, 3\)"):
        prior({"top": top, "bottom": top})
    with pytest.raises(TypeError, match="integer top code maps"):
        prior({"top": top.astype("float32"), "bottom": bottom})


def test_vqvae2_samples_through_its_prior():
    vq = tiny("vq_vae2")
    prior = vaezoo.get("hierarchical_pixelcnn_prior", **vq.prior_config(), channels=8, num_blocks=2)
    images = vq.sample(2, seed=1, prior=prior)
    assert images.shape == (2, 28, 28, 1) and np.all(np.isfinite(images))
    with pytest.raises(ValueError, match=r"this VQVAE2 has .*train a 'hierarchical_pixelcnn_prior'"):
        vq.sample(2, prior=_prior2())
    with pytest.raises(ValueError, match="this VQVAE2 has"):
        vq.sample(2, prior=_prior(code_shape=[7, 7], num_codes=vq.num_codes))


def test_vqvae2_bottom_codebook_of_its_own_size_through_prior_and_sampling():
    # bottom_num_codes: a bottom codebook smaller than the top's, carried to the prior over both code maps.
    vq = tiny("vq_vae2", num_codes=8, bottom_num_codes=3)
    assert vq.top_quantizer.num_codes == 8 and vq.bottom_quantizer.num_codes == 3
    assert vq.get_config()["bottom_num_codes"] == 3 and vq.prior_config()["bottom_num_codes"] == 3
    x = tf.cast(tf.random.stateless_uniform([4, 28, 28, 1], [1, 2]) > 0.5, "float32")
    top, bottom = vq.encode(x)
    assert int(tf.reduce_max(bottom)) < 3 and int(tf.reduce_max(top)) < 8
    # Uniform codes (no prior) stay inside each codebook: the last code at u -> 1.
    codes = vq.codes_from_noise(top_noise=np.full((1, *vq.top_shape), 0.999, "float32"),
                                bottom_noise=np.full((1, *vq.bottom_shape), 0.999, "float32"))
    assert int(tf.reduce_max(codes["top_codes"])) == 7 and int(tf.reduce_max(codes["bottom_codes"])) == 2
    prior = vaezoo.get("hierarchical_pixelcnn_prior", **vq.prior_config(), channels=8, num_blocks=2)
    logits = prior({"top": top, "bottom": bottom})
    assert logits["top"].shape[-1] == 8 and logits["bottom"].shape[-1] == 3
    drawn = prior.sample(3, seed=0)
    assert int(tf.reduce_max(drawn["bottom"])) < 3
    assert vq.sample(2, seed=1, prior=prior).shape == (2, 28, 28, 1)
    with pytest.raises(ValueError, match="'bottom_num_codes': None"):  # a prior of the 8-code bottom is refused
        vq.sample(2, prior=vaezoo.get("hierarchical_pixelcnn_prior", **{**vq.prior_config(), "bottom_num_codes": None},
                                      channels=8, num_blocks=2))
    restored = type(vq).from_config(vq.get_config())
    assert restored.bottom_quantizer.num_codes == 3
    with pytest.raises(vaezoo.ConfigError, match="bottom_num_codes"):
        vaezoo.get("vq_vae2", bottom_num_codes=1)


def test_cli_trains_the_hierarchical_prior_on_a_vqvae2_and_samples(tmp_path, capsys):
    vq = tiny("vq_vae2", data_shape=[32, 32, 1])
    vq.save(tmp_path / "vq2.keras")
    out = tmp_path / "prior2"
    common = ["--dataset", "sprites", "--binarize", "none", "--verbose", "0"]
    assert cli.main(["train", "hierarchical_pixelcnn_prior", "--vqvae", str(tmp_path / "vq2.keras"), "--set",
                     "channels=8", "--set", "num_blocks=2", "--epochs", "1", "--limit", "64", "--out", str(out),
                     *common]) == 0
    prior = keras.models.load_model(out / "model.keras")
    assert (prior.top_shape, prior.bottom_shape, prior.num_codes) == ((8, 8), (16, 16), vq.num_codes)
    assert (out / "samples.png").is_file()
    grid = tmp_path / "grid.png"
    assert cli.main(["sample", "vq_vae2", "--checkpoint", str(tmp_path / "vq2.keras"), "--prior",
                     str(out / "model.keras"), "--out", str(grid), *common]) == 0
    assert grid.is_file()
    codes = next(iter(data.codes_dataset(vq, data.load("sprites", "test", batch_size=8, limit=8))))
    assert codes["top"].shape == (8, 8, 8) and codes["bottom"].shape == (8, 16, 16)
    # The one-level prior cannot model two levels of codes: the error names the one that can.
    capsys.readouterr()
    assert cli.main(["train", "pixelcnn_prior", "--vqvae", str(tmp_path / "vq2.keras"), "--epochs", "1",
                     "--out", str(tmp_path / "wrong"), *common]) == 2
    assert "vaezoo train hierarchical_pixelcnn_prior --vqvae" in capsys.readouterr().err

