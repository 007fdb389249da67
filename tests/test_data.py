"""Data pipelines: real MNIST files, fixed binarized MNIST, procedural sprites, tfds, errors."""

import gzip

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from vaezoo import data


def test_mnist_arrays_from_idx_files(data_dir):
    x, y = data.mnist_arrays("train", data_dir)
    assert x.shape == (60000, 28, 28, 1) and x.dtype == np.float32
    assert 0.0 == x.min() and x.max() == 1.0
    assert y.shape == (60000,) and set(np.unique(y)) == set(range(10))
    xt, yt = data.mnist_arrays("test", data_dir)
    assert xt.shape == (10000, 28, 28, 1) and yt.shape == (10000,)
    assert 0.12 < x.mean() < 0.14  # MNIST's mean intensity is 0.1307


def test_mnist_found_through_env_var(data_dir, monkeypatch):
    monkeypatch.setenv(data.DATA_DIR_ENV, str(data_dir))  # the parent with mnist/ inside
    ds = data.load("mnist", split="test", batch_size=10, limit=30)
    batches = list(ds)
    assert len(batches) == 3 and batches[0].shape == (10, 28, 28, 1)


def test_dynamic_binarization_fresh_each_epoch_and_reproducible(data_dir):
    def epochs(seed):
        ds = data.load("mnist", "test", batch_size=100, data_dir=data_dir, binarize="dynamic", shuffle=True,
                       seed=seed, limit=200)
        return [np.concatenate([b.numpy() for b in ds]) for _ in range(2)]

    keras.utils.set_random_seed(0)
    first, second = epochs(seed=3)
    grey, _ = data.mnist_arrays("test", data_dir)
    assert set(np.unique(first)) == {0.0, 1.0}
    assert not np.array_equal(first, second)  # a fresh Bernoulli draw (and order) every epoch
    # The draw is Bernoulli(grey level): pixel averages match the grey levels.
    np.testing.assert_allclose(first.mean(), grey[data.subset(len(grey), 200)].mean(), atol=0.005)
    keras.utils.set_random_seed(0)
    again, _ = epochs(seed=3)
    np.testing.assert_array_equal(first, again)  # a fixed seed reproduces the sequence


def test_an_unshuffled_seeded_split_is_binarized_once_whatever_the_global_seed(data_dir):
    # A test set: the seed alone pins its binary images, the same on every pass, before or after
    # keras.utils.set_random_seed (tf.data's own random ops would combine it with the global seed).
    def passes():
        ds = data.load("mnist", "test", batch_size=100, data_dir=data_dir, binarize="dynamic", seed=12345, limit=200)
        return [np.concatenate([b.numpy() for b in ds]) for _ in range(2)]

    first, second = passes()
    np.testing.assert_array_equal(first, second)
    for global_seed in (0, 1):
        keras.utils.set_random_seed(global_seed)
        np.testing.assert_array_equal(passes()[0], first)
    grey, _ = data.mnist_arrays("test", data_dir)
    grey = grey[data.subset(len(grey), 200)]  # limit: a fixed random subset
    assert np.all(first[grey == 0] == 0) and np.all(first[grey == 1] == 1)
    np.testing.assert_allclose(first.mean(), grey.mean(), atol=0.005)
    other = data.load("mnist", "test", batch_size=100, data_dir=data_dir, binarize="dynamic", seed=1, limit=200)
    assert not np.array_equal(np.concatenate([b.numpy() for b in other]), first)


def test_binarized_mnist(data_dir):
    sizes = {"train": 50000, "valid": 10000, "test": 10000}
    for split, n in sizes.items():
        x = data.binarized_mnist_arrays(split, data_dir)
        assert x.shape == (n, 28, 28, 1) and set(np.unique(x)) == {0.0, 1.0}
    ds = data.load("binarized_mnist", "valid", batch_size=500, data_dir=data_dir)
    assert next(iter(ds)).shape == (500, 28, 28, 1)
    with pytest.raises(ValueError, match="Unknown binarized MNIST split 'dev'.*valid"):
        data.binarized_mnist_arrays("dev", data_dir)


def test_training_split_is_shuffled_test_split_is_not(data_dir):
    a = next(iter(data.load("mnist", "train", batch_size=64, data_dir=data_dir, seed=1)))
    b = next(iter(data.load("mnist", "train", batch_size=64, data_dir=data_dir, seed=2)))
    assert not np.array_equal(a, b)
    first, _ = data.mnist_arrays("test", data_dir)
    t = next(iter(data.load("mnist", "test", batch_size=64, data_dir=data_dir)))
    np.testing.assert_array_equal(t, first[:64])


def test_sprites_have_known_factors():
    x, factors = data.sprites_arrays("test")
    assert x.shape == (2000, 32, 32, 1) and set(np.unique(x)) == {0.0, 1.0}
    assert set(factors) == {"shape", "scale", "rotation", "x", "y"}
    # The factors really generate the images: rendering them again gives the same pixels,
    # a bigger scale gives a bigger sprite, and x moves the centre of mass.
    np.testing.assert_array_equal(data.render_sprites({k: v[:50] for k, v in factors.items()}), x[:50])
    base = {"shape": np.array([0, 0]), "scale": np.array([0.5, 1.0]), "rotation": np.zeros(2),
            "x": np.array([0.5, 0.5]), "y": np.array([0.5, 0.5])}
    small, big = data.render_sprites(base)
    assert big.sum() > 3 * small.sum()
    moved = data.render_sprites({**base, "x": np.array([0.0, 1.0]), "scale": np.array([1.0, 1.0])})
    cols = np.arange(32)
    centre = [(m[..., 0].sum(0) * cols).sum() / m.sum() for m in moved]
    assert centre[0] < 12 < 20 < centre[1]
    # train and test differ
    assert not np.array_equal(data.sprites_arrays("train")[0][:10], x[:10])


def test_shuffled_epochs_are_permutations_reshuffled_and_reproducible():
    images, _ = data.sprites_arrays("test")

    def rows(a):
        return sorted(bytes(r) for r in np.asarray(a).reshape(len(a), -1).astype(np.uint8))

    ds = data.load("sprites", "test", batch_size=300, shuffle=True, seed=3, limit=900)
    first, second = (np.concatenate([b.numpy() for b in ds]) for _ in range(2))
    kept = images[data.subset(len(images), 900)]  # limit: a fixed random subset
    assert rows(first) == rows(second) == rows(kept)  # every image once per epoch
    assert not np.array_equal(first, second) and not np.array_equal(first, kept)
    again = np.concatenate([b.numpy() for b in data.load("sprites", "test", batch_size=300, shuffle=True, seed=3, limit=900)])
    np.testing.assert_array_equal(again, first)


def test_sprites_pipeline():
    ds = data.load("sprites", "test", batch_size=500)
    batches = list(ds)
    assert [b.shape[0] for b in batches] == [500] * 4 and batches[0].dtype == tf.float32


class VaezooTinyImages(tfds.core.GeneratorBasedBuilder):
    """A local tfds builder: the tfds code path works offline with it."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self, features=tfds.features.FeaturesDict({"image": tfds.features.Image(shape=(8, 8, 1))})
        )

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(12)}

    def _generate_examples(self, n):
        for i in range(n):
            yield i, {"image": np.full((8, 8, 1), i * 20, np.uint8)}


def test_tfds_names(tmp_path):
    ds = data.load("tfds:vaezoo_tiny_images", split="train", batch_size=4, data_dir=tmp_path, shuffle=False)
    x = np.concatenate([b.numpy() for b in ds])
    assert x.shape == (12, 8, 8, 1) and x.dtype == np.float32
    np.testing.assert_allclose(np.sort(x[:, 0, 0, 0]), np.arange(12) * 20 / 255.0, rtol=1e-6)
    with pytest.raises(ValueError, match="no data set 'no_such_dataset_xyz'"):
        data.load("tfds:no_such_dataset_xyz", data_dir=tmp_path)


def test_missing_path_says_where_it_looked(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError) as err:
        data.load("mnist", data_dir=tmp_path)
    message = str(err.value)
    assert str(tmp_path / "train-images-idx3-ubyte.gz") in message
    assert str(tmp_path / "mnist" / "train-images-idx3-ubyte.gz") in message
    assert data.DATA_DIR_ENV in message and "data_dir" in message
    monkeypatch.delenv(data.DATA_DIR_ENV, raising=False)
    with pytest.raises(FileNotFoundError, match="no data directory was given.*VAEZOO_DATA_DIR"):
        data.load("binarized_mnist")


def test_bad_names_list_valid_choices():
    with pytest.raises(ValueError, match="Unknown dataset 'cifar'.*sprites"):
        data.load("cifar")
    with pytest.raises(ValueError, match="Unknown binarize 'static'.*dynamic"):
        data.load("sprites", binarize="static")
    with pytest.raises(ValueError, match="Unknown MNIST split 'val'"):
        data.mnist_arrays("val", "/nonexistent")


def test_idx_reader_checks_the_header(tmp_path):
    bad = tmp_path / "bad.gz"
    with gzip.open(bad, "wb") as f:
        f.write((1234).to_bytes(4, "big") + b"\0" * 16)
    with pytest.raises(ValueError, match="not an IDX file"):
        data.read_idx(bad)
    short = tmp_path / "short.gz"
    with gzip.open(short, "wb") as f:
        f.write((2051).to_bytes(4, "big") + (10).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2 + b"\0" * 100)
    with pytest.raises(ValueError, match="truncated"):
        data.read_idx(short)


def _grey_by_label(n=400, classes=4, seed=0):
    """Images whose grey level encodes their label: a constant (y + 1) / (classes + 1) over 28 x 28 pixels, so a
    dynamically binarized copy still tells its label by its mean (784 Bernoulli draws: sd < 0.018, levels 0.2
    apart: a misread is a 5.5-sd event)."""
    y = np.random.default_rng(seed).integers(0, classes, n)
    x = np.broadcast_to(((y + 1) / (classes + 1))[:, None, None, None], (n, 28, 28, 1)).astype("float32")
    return x, y


@pytest.mark.parametrize("binarize", ["dynamic", "none"])
def test_labels_stay_with_their_images_through_shuffling_and_binarization(binarize):
    x, y = _grey_by_label()
    ds = data.load((x, y), split="all", batch_size=32, labels=True, shuffle=True, binarize=binarize, seed=0)
    for _ in range(2):  # two epochs: each reshuffles
        for images, labels in ds:
            told = np.rint(images.numpy().mean(axis=(1, 2, 3)) * 5 - 1).astype(int)
            np.testing.assert_array_equal(told, labels.numpy())


def test_semi_supervised_batches_keep_their_labelled_images_labels():
    x, y = _grey_by_label(n=600)
    ds = data.semi_supervised((x, y), num_labels=48, batch_size=40, seed=0, binarize="dynamic")
    labelled_seen = 0
    for images, labels in ds.take(12):
        labels = labels.numpy()
        told = np.rint(images.numpy().mean(axis=(1, 2, 3)) * 5 - 1).astype(int)
        mask = labels >= 0
        np.testing.assert_array_equal(told[mask], labels[mask])
        labelled_seen += mask.sum()
        assert mask.sum() == 4 and (labels[~mask] == data.UNLABELED).all()
    assert labelled_seen == 48  # 12 batches of 4: the 48 labels
