"""The latent-space pictures: the manifold lattice, PCA projection, the class scatter, and where the CLI and
TensorBoard write them."""

import numpy as np
import pytest
from scipy import stats

from vaezoo import plots

from conftest import tiny


def test_lattice_cells_hold_equal_prior_mass():
    steps = 7
    z = plots.lattice(steps)
    assert z.shape == (steps * steps, 2)
    grid = z.reshape(steps, steps, 2)
    # Columns sweep z1 upwards, rows sweep z2 downwards (the top row holds the largest z2).
    np.testing.assert_allclose(stats.norm.cdf(grid[0, :, 0]), (np.arange(steps) + 0.5) / steps, atol=1e-6)
    np.testing.assert_allclose(stats.norm.cdf(grid[::-1, 0, 1]), (np.arange(steps) + 0.5) / steps, atol=1e-6)
    assert np.all(grid[:, :, 0] == grid[0, :, 0]) and np.all(grid[:, :, 1].T == grid[:, 0, 1])
    with pytest.raises(ValueError, match="steps >= 2, got 1"):
        plots.lattice(1)


def test_manifold_decodes_the_lattice_of_a_2d_latent():
    model = tiny("vae", latent_dim=2, data_shape=(16, 16, 1))
    grid = plots.manifold(model, steps=4)
    assert grid.shape == (16, 16, 16, 1)
    np.testing.assert_allclose(grid, np.asarray(model.decode(plots.lattice(4))), rtol=1e-6)
    assert plots.has_manifold(model)
    with pytest.raises(ValueError, match="latent_dim=4"):
        plots.manifold(tiny("vae", latent_dim=4, data_shape=(16, 16, 1)))
    assert not plots.has_manifold(tiny("vae", latent_dim=2, prior="mixture", data_shape=(16, 16, 1)))


def test_project_2d_keeps_the_principal_plane():
    rng = np.random.default_rng(0)
    plane = rng.normal(size=(500, 2)) * [3.0, 1.0]
    basis, _ = np.linalg.qr(rng.normal(size=(6, 2)))  # an orthonormal 2-D subspace of R^6
    codes = plane @ basis.T + 5.0
    points, explained = plots.project_2d(codes)
    assert explained == pytest.approx(1.0, abs=1e-9)
    # Distances within the plane survive the projection (rotation and centring only).
    i, j = rng.integers(0, 500, size=(2, 50))
    np.testing.assert_allclose(np.linalg.norm(points[i] - points[j], axis=1),
                               np.linalg.norm(codes[i] - codes[j], axis=1), rtol=1e-4, atol=1e-4)
    noisy = np.concatenate([codes, rng.normal(size=(500, 1))], axis=1)  # a third direction of variance 1
    _, part = plots.project_2d(noisy)
    assert 0.85 < part < 0.95  # (9 + 1) / (9 + 1 + 1), sampled
    two = rng.normal(size=(10, 2))
    np.testing.assert_allclose(plots.project_2d(two)[0], two, rtol=1e-6)
    with pytest.raises(ValueError, match=r"got shape \(10,\)"):
        plots.project_2d(np.zeros(10))


def test_scatter_colours_each_point_by_its_class():
    points = np.array([[0.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    labels = np.array([0, 1, 2])
    picture = plots.scatter(points, labels, size=100, radius=3)
    assert picture.shape == (100, 210, 3) and picture.dtype == np.uint8
    margin = 12
    # (0, 0) is the bottom-left corner, (1, 1) the top-right one.
    assert tuple(picture[100 - margin, margin]) == plots.PALETTE[0]
    assert tuple(picture[margin, 100 - margin]) == plots.PALETTE[1]
    assert tuple(picture[margin, margin]) == plots.PALETTE[2]
    assert tuple(picture[100 - margin, 100 - margin]) == (255, 255, 255)
    with pytest.raises(ValueError, match="3 points but 2 labels"):
        plots.scatter(points, labels[:2])
