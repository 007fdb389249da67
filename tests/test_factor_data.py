"""Images with known factors: vaezoo's dSprites-style grid and the reader of the published dSprites file."""

import numpy as np
import pytest

from vaezoo import data, disentanglement

GRID = data.SpriteGrid()


def test_the_grid_is_every_combination_of_the_factors():
    assert len(GRID) == 3 * 6 * 40 * 32 * 32 == 737_280
    assert GRID.factor_names == ("shape", "scale", "orientation", "x", "y")
    index = np.array([0, 1, 32, 1024, 40 * 1024, len(GRID) - 1])
    factors = GRID.factors_of(index)
    np.testing.assert_array_equal(factors[:5], [[0, 0, 0, 0, 0], [0, 0, 0, 0, 1], [0, 0, 0, 1, 0],
                                                [0, 0, 1, 0, 0], [0, 1, 0, 0, 0]])
    np.testing.assert_array_equal(factors[-1], [2, 5, 39, 31, 31])
    np.testing.assert_array_equal(GRID.index_of(factors), index)


def test_images_are_binary_deterministic_and_follow_each_factor():
    rng = np.random.default_rng(0)
    base = GRID.sample_factors(16, rng)
    images = GRID.images(base)
    assert images.shape == (16, 64, 64, 1) and images.dtype == np.float32
    assert set(np.unique(images)) <= {0.0, 1.0} and images.sum(axis=(1, 2, 3)).min() > 0
    np.testing.assert_array_equal(images, GRID.images(base))

    def moved(j, value):
        rows = base.copy()
        rows[:, j] = value
        return GRID.images(rows)

    ys, xs = np.mgrid[0:64, 0:64]
    centre_x = [(moved(3, v)[..., 0] * xs).sum((1, 2)) / moved(3, v).sum((1, 2, 3)) for v in (0, 31)]
    centre_y = [(moved(4, v)[..., 0] * ys).sum((1, 2)) / moved(4, v).sum((1, 2, 3)) for v in (0, 31)]
    assert np.all(centre_x[1] - centre_x[0] > 20) and np.all(centre_y[1] - centre_y[0] > 20)  # x moves right, y down
    assert np.all(moved(1, 5).sum((1, 2, 3)) > 2 * moved(1, 0).sum((1, 2, 3)))  # scale grows the area
    assert np.all((moved(0, 0) != moved(0, 2)).any(axis=(1, 2, 3)))  # shape changes the image
    hearts = base.copy()
    hearts[:, 0] = 2  # a heart has no rotational symmetry: every orientation step changes it
    turned = hearts.copy()
    turned[:, 2] = (hearts[:, 2] + 10) % 40
    assert np.all((GRID.images(hearts) != GRID.images(turned)).any(axis=(1, 2, 3)))


def test_fix_one_factor_draw_the_rest():
    rng = np.random.default_rng(1)
    rows = GRID.sample_with_fixed(200, "scale", rng)
    assert len(np.unique(rows[:, 1])) == 1 and all(len(np.unique(rows[:, j])) > 1 for j in (0, 2, 3, 4))
    assert (GRID.sample_with_fixed(5, 0, rng, value=2)[:, 0] == 2).all()
    with pytest.raises(ValueError, match="Unknown factor 'colour'.*shape, scale"):
        GRID.sample_with_fixed(5, "colour", rng)


def test_bad_factors_are_named():
    with pytest.raises(ValueError, match=r"Factor 'orientation' takes values 0\.\.39"):
        GRID.images([[0, 0, 40, 0, 0]])
    with pytest.raises(ValueError, match=r"\[n, 5\]"):
        GRID.images([[0, 0, 0]])
    with pytest.raises(ValueError, match="Grid indices"):
        GRID.factors_of([len(GRID)])
    with pytest.raises(ValueError, match="Unknown data set with factors"):
        data.factor_data("sprites_3d")


def test_chunks_walk_the_grid_in_order_without_holding_it():
    seen = list(GRID.chunks(chunk_size=1000, start=5000, stop=7500))
    assert [len(f) for _, f in seen] == [1000, 1000, 500]
    np.testing.assert_array_equal(np.concatenate([GRID.index_of(f) for _, f in seen]), np.arange(5000, 7500))
    np.testing.assert_array_equal(seen[1][0], GRID.images(seen[1][1]))


def test_dataset_yields_images_with_their_factors():
    ds = data.SpriteGrid(size=32).dataset(batch_size=8, seed=0, with_factors=True, limit=64)
    batches = list(ds.take(9))  # more than one pass over the 64 examples: the stream repeats
    for images, factors in batches:
        assert images.shape == (8, 32, 32, 1) and factors.shape == (8, 5)
        np.testing.assert_array_equal(images.numpy(), data.SpriteGrid(size=32).images(factors.numpy()))
    first_pass = np.concatenate([GRID.index_of(f.numpy()) for _, f in batches[:8]])
    assert sorted(first_pass) == list(range(64))  # each example once per pass


def test_the_grid_is_a_factor_sampler_for_the_scores():
    """An encoder that reads x and y off the image (its centre of mass) disentangles those two factors."""
    grid = data.SpriteGrid(size=32)
    ys, xs = np.mgrid[0:32, 0:32]

    def encode(images):
        mass = images[..., 0].sum((1, 2))
        return np.stack([(images[..., 0] * xs).sum((1, 2)) / mass, (images[..., 0] * ys).sum((1, 2)) / mass,
                         mass], axis=1)

    factors = grid.sample_factors(2000, np.random.default_rng(0))
    codes = encode(grid.images(factors))
    mig_xy = disentanglement.mig(codes, factors[:, 3:])
    assert mig_xy > 0.7
    score = disentanglement.factor_vae_score(encode, grid, num_train=100, num_eval=100, num_variance_estimate=500)
    assert score["eval_accuracy"] > 0.5  # x, y and scale found; shape and orientation share what is left


class _TinyDSprites(data.DSprites):
    factor_sizes = (3, 2, 2, 2, 2)


def _write_dsprites(path, sizes, broken=False):
    grid = data.FactorData()
    grid.factor_sizes = sizes
    classes = grid.factors_of(np.arange(len(grid)))
    images = np.random.default_rng(0).integers(0, 2, size=(len(grid), 64, 64)).astype(np.uint8)
    if broken:
        classes = classes[::-1]
    np.savez(path, imgs=images, latents_classes=np.c_[np.zeros(len(grid), np.int64), classes])
    return images, classes


def test_dsprites_file_is_read_with_the_same_interface(tmp_path):
    (tmp_path / "dsprites").mkdir()
    images, classes = _write_dsprites(tmp_path / "dsprites" / data.DSprites.FILENAME, _TinyDSprites.factor_sizes)
    real = _TinyDSprites(tmp_path)
    rows = classes[[5, 17, 40]]
    np.testing.assert_array_equal(real.images(rows)[..., 0], images[[5, 17, 40]])
    assert real.images(rows).dtype == np.float32 and len(real) == 48


def test_dsprites_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="dsprites_ndarray"):
        data.factor_data("dsprites", data_dir=tmp_path)
    _write_dsprites(tmp_path / data.DSprites.FILENAME, _TinyDSprites.factor_sizes, broken=True)
    with pytest.raises(data.DataError, match="factor order"):
        _TinyDSprites(tmp_path)
    (tmp_path / data.DSprites.FILENAME).write_bytes(b"not an npz")
    with pytest.raises(data.DataError, match="not a readable dSprites file"):
        _TinyDSprites(tmp_path)


def test_evaluate_scores_a_representation_on_the_grid():
    grid = data.SpriteGrid(size=32)
    ys, xs = np.mgrid[0:32, 0:32]

    def encode(images):
        mass = images[..., 0].sum((1, 2))
        return np.stack([(images[..., 0] * xs).sum((1, 2)) / mass, (images[..., 0] * ys).sum((1, 2)) / mass], 1)

    scores = disentanglement.evaluate(encode, grid, ("mig", "modularity"), num_examples=1000)
    assert set(scores) == {"mig", "modularity"} and scores["modularity"] > 0.9
    assert disentanglement.evaluate(encode, grid, ("mig",), num_examples=1000, seed=1)["mig"] == pytest.approx(
        scores["mig"], abs=0.02)  # stable across seeds
    with pytest.raises(ValueError, match="Unknown metric 'migg'.*factor_vae_score"):
        disentanglement.evaluate(encode, grid, ("migg",))
