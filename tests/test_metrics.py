"""Sample-quality metrics (vaezoo.metrics): each against a closed form or a property that could fail, and the
shipped feature classifiers."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

import vaezoo
from vaezoo import data, metrics, pretrained
from vaezoo.cli import main as cli_main


def gaussian(n, d, shift=0.0, seed=0):
    return np.random.default_rng(seed).normal(size=(n, d)) + shift


# ---- the Frechet distance ----------------------------------------------------------------------------------------

def test_frechet_distance_of_diagonal_gaussians_is_the_closed_form():
    rng = np.random.default_rng(1)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    var1, var2 = rng.uniform(0.1, 3.0, 6), rng.uniform(0.1, 3.0, 6)
    exact = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(var1) - np.sqrt(var2)) ** 2)
    assert metrics.frechet_distance(mu1, np.diag(var1), mu2, np.diag(var2)) == pytest.approx(exact, rel=1e-10)


def test_frechet_distance_of_full_covariances_matches_the_matrix_square_root():
    scipy_linalg = pytest.importorskip("scipy.linalg")
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(5, 5)), rng.normal(size=(5, 5))
    s1, s2 = a @ a.T + 0.1 * np.eye(5), b @ b.T + 0.1 * np.eye(5)  # non-commuting
    mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
    root = scipy_linalg.sqrtm(s1 @ s2).real
    exact = np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * root)
    assert metrics.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(exact, rel=1e-8)
    assert metrics.frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0.0, abs=1e-8)


def test_fid_ignores_the_order_of_the_samples_and_falls_as_real_samples_are_mixed_in():
    real, other_real, far = gaussian(2000, 8, seed=3), gaussian(2000, 8, seed=4), gaussian(2000, 8, 2.0, seed=5)
    perm = np.random.default_rng(6).permutation(2000)
    assert metrics.fid(real, far) == pytest.approx(metrics.fid(real, far[perm]), rel=1e-9)
    values = [metrics.fid(real, np.concatenate([other_real[: int(f * 2000)], far[int(f * 2000):]]))
              for f in np.linspace(0.0, 1.0, 6)]
    assert all(b < a for a, b in zip(values, values[1:])), values
    assert values[-1] < 0.05 * values[0]


# ---- KID -------------------------------------------------------------------------------------------------------

def test_kid_is_unbiased_on_two_samples_of_one_gaussian():
    values = [metrics.kid(gaussian(1000, 16, seed=2 * s), gaussian(1000, 16, seed=2 * s + 1), num_blocks=5,
                          seed=s).value for s in range(20)]
    mean, error = np.mean(values), np.std(values, ddof=1) / np.sqrt(len(values))
    assert abs(mean) < 3 * error + 1e-4, (mean, error)  # measured: -0.0005 +- 0.0011


def test_kid_separates_shifted_gaussians_by_many_standard_errors():
    result = metrics.kid(gaussian(1000, 16, seed=0), gaussian(1000, 16, 0.3, seed=1), num_blocks=5)
    assert result.value > 5 * result.standard_error  # measured: 0.31 +- 0.025
    assert (result.num_blocks, result.block_size) == (5, 200)


def test_unbiased_mmd_matches_its_definition():
    x, y = gaussian(5, 3, seed=0), gaussian(4, 3, 1.0, seed=1)
    k = lambda a, b: (a @ b / 3 + 1) ** 3  # noqa: E731
    xx = np.mean([k(x[i], x[j]) for i in range(5) for j in range(5) if i != j])
    yy = np.mean([k(y[i], y[j]) for i in range(4) for j in range(4) if i != j])
    xy = np.mean([k(a, b) for a in x for b in y])
    assert metrics.mmd2_unbiased(x, y) == pytest.approx(xx + yy - 2 * xy, rel=1e-10)


# ---- precision and recall ----------------------------------------------------------------------------------------

def test_precision_and_recall_tell_realism_from_coverage():
    rng = np.random.default_rng(7)
    centres = rng.normal(size=(4, 16)) * 6
    real = centres[rng.integers(0, 4, 2000)] + rng.normal(size=(2000, 16))
    every_mode = centres[rng.integers(0, 4, 2000)] + rng.normal(size=(2000, 16))
    half_the_modes = centres[rng.integers(0, 2, 2000)] + rng.normal(size=(2000, 16))
    p_all, r_all = metrics.precision_recall(real, every_mode)
    p_half, r_half = metrics.precision_recall(real, half_the_modes)
    assert p_all > 0.7 and r_all > 0.7  # measured 0.77, 0.79 (0.78, 0.39 with half the modes)
    assert p_half > 0.7 and r_half < 0.6 * r_all  # dropping modes costs recall, not precision
    p_off, r_off = metrics.precision_recall(real, real + 8.0)
    assert p_off < 0.1 and r_off < 0.1
    assert metrics.precision_recall(real, real) == (1.0, 1.0)


def test_metrics_refuse_what_they_cannot_use():
    with pytest.raises(metrics.MetricsError, match="k=3"):
        metrics.precision_recall(gaussian(3, 2), gaussian(10, 2))
    with pytest.raises(metrics.MetricsError, match="num_blocks"):
        metrics.kid(gaussian(10, 2), gaussian(10, 2), num_blocks=10)
    with pytest.raises(metrics.MetricsError, match=r"\[N, D\]"):
        metrics.fid(np.zeros((10, 2, 2)), gaussian(10, 2))


# ---- the shipped classifiers ------------------------------------------------------------------------------------

def test_classifier_manifest_lists_mnist_and_sprites_with_their_accuracy():
    entries = metrics.classifier_manifest()
    assert set(entries) >= {"mnist", "sprites"}
    assert entries["mnist"]["test_accuracy"] > 0.99 and entries["mnist"]["test_accuracy_binarized"] > 0.98
    assert entries["sprites"]["test_accuracy"] > 0.9
    for entry in entries.values():
        assert entry["sha256"] == pretrained.sha256(metrics.CLASSIFIERS_DIR / entry["file"])


def test_unknown_or_damaged_classifiers_are_refused(tmp_path):
    with pytest.raises(metrics.MetricsError, match="valid choices: mnist, sprites"):
        metrics.load_classifier("cifar10")
    with pytest.raises(metrics.MetricsError, match="mnist, sprites"):
        metrics.default_classifier("my_folder")
    assert metrics.default_classifier("binarized_mnist") == "mnist"
    shutil.copytree(metrics.CLASSIFIERS_DIR, tmp_path / "c")
    with open(tmp_path / "c" / "mnist.weights.h5", "r+b") as f:
        f.seek(100_000)
        byte = f.read(1)
        f.seek(100_000)
        f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(pretrained.PretrainedError, match="damaged"):
        metrics.load_classifier("mnist", folder=tmp_path / "c")


def test_feature_extractor_checks_shape_and_range():
    extractor = metrics.FeatureExtractor("sprites")
    images, _ = data.sprites_arrays("test")
    features = extractor(images[:50])
    assert features.shape == (50, 128) and np.isfinite(features).all()
    assert np.allclose(extractor(images[:50, :, :, 0]), features)  # [N, H, W] for one channel
    with pytest.raises(metrics.MetricsError, match=r"shape \(5, 28, 28, 1\).*\[N, 32, 32, 1\]"):
        extractor(np.zeros((5, 28, 28, 1)))
    with pytest.raises(metrics.MetricsError, match="divide 0..255"):
        extractor(images[:5] * 255.0)


def test_sprites_classifier_reads_the_shape_and_its_fid_tells_real_from_noise():
    extractor = metrics.FeatureExtractor("sprites")
    test, factors = data.sprites_arrays("test")
    train, _ = data.sprites_arrays("train")
    accuracy = np.mean(np.argmax(extractor.predict(test), -1) == factors["shape"])
    assert accuracy == pytest.approx(metrics.classifier_info("sprites")["test_accuracy"], abs=1e-3)
    real, other = extractor(test), extractor(train[:2000])
    noise = extractor(np.random.default_rng(0).uniform(size=(2000, 32, 32, 1)))
    assert metrics.fid(real, other) < 0.02 * metrics.fid(real, noise)
    quality = metrics.sample_quality(train[:2000], test, classifier=extractor, real_features=real)
    assert quality.precision > 0.8 and quality.recall > 0.8
    assert abs(quality.kid) < 3 * quality.kid_standard_error + 1e-3


def test_mnist_classifier_accuracy_and_real_against_real(data_dir):
    extractor = metrics.FeatureExtractor("mnist")
    test, labels = data.mnist_arrays("test", data_dir)
    train, _ = data.mnist_arrays("train", data_dir)
    accuracy = np.mean(np.argmax(extractor.predict(test), -1) == labels)
    assert accuracy == pytest.approx(metrics.classifier_info("mnist")["test_accuracy"], abs=1e-3)
    real = extractor(test[:3000])
    train_quality = metrics.sample_quality(train[:3000], test[:3000], classifier=extractor, real_features=real)
    noise_quality = metrics.sample_quality(np.random.default_rng(0).uniform(size=(3000, 28, 28, 1)),
                                           test[:3000], classifier=extractor, real_features=real)
    assert train_quality.fid < 0.05 * noise_quality.fid  # measured 24 against 1434
    assert train_quality.precision > 0.8 and train_quality.recall > 0.8  # measured 0.86, 0.87
    # Noise is not realistic (0.09 measured; 0.9998 on the post-ReLU features, see build_classifier) and covers
    # nothing.
    assert noise_quality.precision < 0.2 and noise_quality.recall < 0.01
    assert noise_quality.kid > 10 * noise_quality.kid_standard_error


def test_model_sample_quality_of_an_untrained_model(tmp_path):
    model = vaezoo.get("vae", data_shape=[32, 32, 1], latent_dim=4, hidden_units=[16])
    test, _ = data.sprites_arrays("test")
    quality = metrics.model_sample_quality(model, test[:400], num_samples=300, classifier="sprites")
    assert quality.num_generated == 300 and quality.num_real == 400
    assert np.isfinite([quality.fid, quality.kid]).all() and 0 <= quality.precision <= 1
    again = metrics.model_sample_quality(model, test[:400], num_samples=300, classifier="sprites")
    assert again == quality  # seeded draws
    assert "FID" in metrics.describe(quality)


def test_cli_evaluate_samples_prints_the_four_metrics(tmp_path, capsys):
    model = vaezoo.get("vae", data_shape=[32, 32, 1], latent_dim=4, hidden_units=[16])
    path = tmp_path / "m.keras"
    model.save(path)
    argv = ["evaluate", "vae", "--checkpoint", str(path), "--data", "sprites", "--set", "data_shape=[32, 32, 1]",
            "--set", "latent_dim=4", "--set", "hidden_units=[16]", "--samples", "200", "--limit", "300"]
    assert cli_main(argv) == 0
    out = capsys.readouterr().out
    assert "200 samples against 300 images of sprites:test" in out
    assert "FID" in out and "KID" in out and "precision" in out and "recall" in out
    assert cli_main(argv + ["--classifier", "mnist"]) == 2
    assert "reads (28, 28, 1)" in capsys.readouterr().err
