"""MMD-regularised autoencoders (wae_mmd, info_vae): the kernels and the U-statistic against hand sums."""

import numpy as np
import pytest

import vaezoo
from vaezoo.models.mmd import IMQ_SCALES, kernel_matrix, mmd_u

from conftest import batch_for, tiny


def by_hand(x, y, kernel):
    d = x.shape[1]

    def k(a, b):
        sq = float(np.sum((a - b) ** 2))
        if kernel == "rbf":
            return np.exp(-sq / (2 * d))
        return sum(2 * d * s / (2 * d * s + sq) for s in IMQ_SCALES)

    n, m = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(n) for j in range(m)) / (n * m)
    return xx + yy - 2 * xy


@pytest.mark.parametrize("kernel", ["imq", "rbf"])
def test_mmd_u_statistic_matches_the_hand_computed_sum(kernel):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(5, 3)).astype("float32"), rng.normal(1.0, 2.0, size=(4, 3)).astype("float32")
    np.testing.assert_allclose(float(mmd_u(x, y, kernel)), by_hand(x, y, kernel), rtol=1e-4, atol=1e-6)
    k = kernel_matrix(x, x, kernel).numpy()
    np.testing.assert_allclose(np.diag(k), 1.0 if kernel == "rbf" else len(IMQ_SCALES), rtol=1e-5)  # k(x, x)


@pytest.mark.parametrize("kernel", ["imq", "rbf"])
def test_mmd_is_unbiased_near_zero_for_one_law_and_positive_for_two(kernel):
    rng = np.random.default_rng(1)
    same = [float(mmd_u(rng.normal(size=(64, 4)), rng.normal(size=(64, 4)), kernel)) for _ in range(200)]
    shifted = [float(mmd_u(rng.normal(size=(64, 4)), rng.normal(0.5, 1.0, size=(64, 4)), kernel)) for _ in range(50)]
    se = np.std(same) / np.sqrt(len(same))
    assert abs(np.mean(same)) < 4 * se and min(same) < 0 < max(same)  # unbiased: negative values occur
    assert np.mean(shifted) > np.mean(same) + 10 * se and min(shifted) > 0


def test_wae_and_info_vae_objectives():
    wae = tiny("wae_mmd", mmd_weight=7.0)
    x = batch_for(wae, n=16)
    terms = wae.compute_terms(x, seed=2)
    z = terms["z"][0].numpy()
    np.testing.assert_allclose(float(wae.objective(terms)),
                               np.mean(terms["reconstruction"]) + 7.0 * float(terms["mmd"][0]), rtol=1e-5)
    assert np.allclose(terms["mmd"], terms["mmd"][0])  # one batch statistic, shown per example
    assert z.shape == (16, wae.latent_dim)
    info = tiny("info_vae", alpha=0.5, mmd_weight=3.0)
    t = info.compute_terms(batch_for(info, n=16), seed=2)
    expected = np.mean(t["reconstruction"]) + 0.5 * np.mean(t["kl"]) + 2.5 * float(t["mmd"][0])
    np.testing.assert_allclose(float(info.objective(t)), expected, rtol=1e-5)
    vae_like = tiny("info_vae", alpha=0.0, mmd_weight=1.0)  # alpha 0, lambda 1: the VAE's objective
    t = vae_like.compute_terms(batch_for(vae_like, n=8), seed=1)
    np.testing.assert_allclose(float(vae_like.objective(t)), -np.mean(t["elbo"]), rtol=1e-5)


def test_mmd_models_refuse_bad_settings():
    with pytest.raises(vaezoo.ConfigError, match="'kernel'.*one of imq, rbf.*'gauss'"):
        vaezoo.get("wae_mmd", kernel="gauss")
    with pytest.raises(vaezoo.ConfigError, match="alpha \\+ mmd_weight >= 1"):
        vaezoo.get("info_vae", alpha=-1.0, mmd_weight=0.5)
    with pytest.raises(vaezoo.ConfigError, match="'gradient_estimator'.*one of reparameterization.*'score_function'"):
        vaezoo.get("wae_mmd", gradient_estimator="score_function")
