"""tf.data pipelines for vaezoo: MNIST, binarized MNIST, procedural sprites, any tfds name, and a user's
own folders, files, arrays and datasets (:mod:`vaezoo.sources`).

All pipelines yield float32 images ``[B, H, W, C]`` with values in [0, 1] (or ``(images, labels)``
batches with ``labels=True``), batched, shuffled (training split) and prefetched. The registered data
sets (:data:`DATASETS`, extended by :func:`register_dataset` and plugins of the entry-point group
``vaezoo.datasets``):

* ``mnist``: the original IDX ``.gz`` files, from ``data_dir`` or ``$VAEZOO_DATA_DIR``
  (either the folder holding the files or a parent with an ``mnist/`` folder). ``binarize=
  "dynamic"`` draws a fresh Bernoulli sample of every image each epoch, as in the IWAE paper;
  ``"none"`` keeps the grey levels.
* ``binarized_mnist``: the fixed binarization of Larochelle & Murray (``binarized_mnist.npz``
  with keys train/valid/test), used for the IWAE paper's static-binarization results.
* ``sprites``: dSprites-like 32x32 binary images that vaezoo draws itself from known factors
  (shape, scale, rotation, x, y), so nothing has to be downloaded.
* ``sprites_grid``: the full 64x64 grid of :class:`SpriteGrid` (3 shapes x 6 scales x 40
  orientations x 32 x 32 positions), drawn batch by batch; the disentanglement models' data.
* ``tfds:NAME``: any tensorflow-datasets data set with an ``image`` feature (downloads on a
  machine with internet).

Example:

>>> from vaezoo import data
>>> train = data.load("mnist", split="train", batch_size=128, data_dir="../shared/data")
>>> test = data.load("sprites", split="test", batch_size=256)
>>> mine = data.load("my_images/", split="train", image_size=(64, 64), labels=True)  # class sub-folders

References:
    Burda, Grosse & Salakhutdinov, "Importance Weighted Autoencoders", ICLR 2016 (dynamic
    binarization). Larochelle & Murray, "The Neural Autoregressive Distribution Estimator",
    AISTATS 2011 (fixed binarization). Matthey et al., "dSprites: Disentanglement testing
    Sprites dataset", 2017.
"""

from __future__ import annotations

import functools
import gzip
import os
import zipfile
import zlib
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import tensorflow as tf

from vaezoo import config as _config
from vaezoo import sources
from vaezoo.sources import DataError

DATA_DIR_ENV = _config.DATA_DIR_ENV


#: The registered data sets (a live registry: a plugin's entry counts once registered).
DATASETS = sources.DATASETS
register_dataset = sources.register_dataset
BINARIZE = _config.BINARIZE

_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


# --------------------------------------------------------------------------------------------
# Locating files
# --------------------------------------------------------------------------------------------


def _find(filename: str, subfolder: str, data_dir: str | os.PathLike | None) -> Path:
    """Find ``filename`` in ``data_dir`` (or ``$VAEZOO_DATA_DIR``) or its ``subfolder``; raise if absent."""
    if data_dir is not None:
        root, origin = Path(data_dir), "the data_dir argument"
    elif os.environ.get(DATA_DIR_ENV):
        root, origin = Path(os.environ[DATA_DIR_ENV]), f"${DATA_DIR_ENV}"
    else:
        raise FileNotFoundError(
            f"vaezoo needs {filename!r} but no data directory was given: pass data_dir=... (CLI: "
            f"--data-dir) or set {DATA_DIR_ENV} to a folder holding {filename} (or a '{subfolder}/' folder with it)."
        )
    candidates = [root / filename, root / subfolder / filename]
    for path in candidates:
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"vaezoo could not find {filename!r}; it looked in {', '.join(str(c) for c in candidates)} "
        f"(directory from {origin}). Point data_dir (CLI: --data-dir) or {DATA_DIR_ENV} at the folder "
        f"holding the file or its '{subfolder}/' parent."
    )


# --------------------------------------------------------------------------------------------
# Array loaders
# --------------------------------------------------------------------------------------------


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one (gzipped) IDX file: big-endian magic (2051 images, 2049 labels), sizes, uint8 data."""
    opener = gzip.open if str(path).endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (EOFError, OSError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
        raise DataError(f"{path} is corrupt or truncated ({type(exc).__name__}: {exc}); download it again.") from None
    magic = int.from_bytes(raw[:4], "big") if len(raw) >= 4 else None
    if magic not in (2049, 2051):
        raise DataError(f"{path} is not an IDX file of uint8 labels or images (magic number {magic}); "
                        "download it again.")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise DataError(f"{path} is truncated: header says {dims}, found {data.size} values; download it again.")
    return data.reshape(dims)


def mnist_arrays(split: str = "train", data_dir=None) -> tuple[np.ndarray, np.ndarray]:
    """MNIST images ``[N, 28, 28, 1]`` float32 in [0, 1] and labels ``[N]`` from the IDX files."""
    if split not in _MNIST_FILES:
        raise ValueError(f"Unknown MNIST split {split!r}; valid choices: {', '.join(_MNIST_FILES)}.")
    images_file, labels_file = _MNIST_FILES[split]
    images = read_idx(_find(images_file, "mnist", data_dir))
    labels = read_idx(_find(labels_file, "mnist", data_dir))
    return (images[..., None].astype(np.float32) / 255.0), labels.astype(np.int64)


def binarized_mnist_arrays(split: str = "train", data_dir=None) -> np.ndarray:
    """The fixed binarized MNIST split (train 50k / valid 10k / test 10k) as ``[N, 28, 28, 1]`` float32."""
    path = _find("binarized_mnist.npz", "binarized-mnist", data_dir)
    try:
        with np.load(path) as npz:
            if split not in npz.files:
                raise ValueError(f"Unknown binarized MNIST split {split!r}; valid choices: {', '.join(npz.files)}.")
            rows = npz[split]
    except (EOFError, OSError, zipfile.BadZipFile, zlib.error) as exc:
        raise DataError(f"{path} is corrupt or truncated ({type(exc).__name__}: {exc}); download it again.") from None
    return rows.reshape(-1, 28, 28, 1).astype(np.float32)


SPRITE_SHAPES = ("square", "ellipse", "heart")


def sprite_factors(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Draw ``n`` factor settings uniformly: shape index, scale, rotation (rad), x, y (in [0, 1])."""
    rng = np.random.default_rng(seed)
    return {
        "shape": rng.integers(0, len(SPRITE_SHAPES), n),
        "scale": rng.uniform(0.5, 1.0, n),
        "rotation": rng.uniform(0.0, 2 * np.pi, n),
        "x": rng.uniform(0.0, 1.0, n),
        "y": rng.uniform(0.0, 1.0, n),
    }


def render_sprites(factors: dict[str, np.ndarray], size: int = 32) -> np.ndarray:
    """Draw binary sprites ``[N, size, size, 1]`` float32 from their factors (dSprites-like)."""
    grid = ((np.arange(size) + 0.5) / size).astype(np.float32)  # pixel centres in (0, 1)
    yy, xx = np.meshgrid(grid, grid, indexing="ij")

    def per_sprite(values):
        return np.asarray(values, dtype=np.float32)[:, None, None]

    radius = 0.25 * per_sprite(factors["scale"])  # sprite half-size in image units
    margin = 0.25  # keep sprites inside the frame
    cx = margin + (1 - 2 * margin) * per_sprite(factors["x"])
    cy = margin + (1 - 2 * margin) * per_sprite(factors["y"])
    cos, sin = np.cos(per_sprite(factors["rotation"])), np.sin(per_sprite(factors["rotation"]))
    u = ((xx - cx) * cos + (yy - cy) * sin) / radius  # sprite frame, unit half-size
    v = (-(xx - cx) * sin + (yy - cy) * cos) / radius
    shape = factors["shape"][:, None, None]
    square = np.maximum(np.abs(u), np.abs(v)) <= 0.8
    ellipse = (u / 1.0) ** 2 + (v / 0.6) ** 2 <= 1.0
    hu, hv = 1.1 * u, -1.1 * v + 0.25  # heart curve (x^2 + y^2 - 1)^3 - x^2 y^3 <= 0
    heart = (hu**2 + hv**2 - 1) ** 3 - hu**2 * hv**3 <= 0
    mask = np.where(shape == 0, square, np.where(shape == 1, ellipse, heart))
    return mask[..., None].astype(np.float32)


@functools.lru_cache(maxsize=4)
def sprites_arrays(split: str = "train", size: int = 32, num_examples: int | None = None):
    """Procedural sprites and their factors; train (20,000) and test (2,000) use disjoint seeds.

    Cached: repeated calls return the same (read-only) arrays.
    """
    seeds = {"train": (0, 20_000), "test": (1, 2_000)}
    if split not in seeds:
        raise ValueError(f"Unknown sprites split {split!r}; valid choices: {', '.join(seeds)}.")
    seed, default_n = seeds[split]
    factors = sprite_factors(num_examples or default_n, seed=seed)
    images = render_sprites(factors, size=size)
    images.flags.writeable = False
    return images, factors


# --------------------------------------------------------------------------------------------
# Images with known discrete factors (disentanglement)
# --------------------------------------------------------------------------------------------


class FactorData:
    """Images generated by known discrete factors: the full grid of combinations, and draws from it.

    Factor ``j`` takes the values ``0 .. factor_sizes[j] - 1``; example ``i`` of the grid has the
    factors ``np.unravel_index(i, factor_sizes)`` (the last factor varies fastest). What the
    disentanglement metrics need (:class:`vaezoo.disentanglement.FactorSampler`): ``sample_factors``
    and ``observations``. Subclasses define ``factor_names``, ``factor_sizes`` and ``images``.
    """

    factor_names: tuple[str, ...] = ()
    factor_sizes: tuple[int, ...] = ()

    @property
    def num_factors(self) -> int:
        return len(self.factor_sizes)

    def __len__(self) -> int:
        return int(np.prod(self.factor_sizes))

    def images(self, factors) -> np.ndarray:
        """``[n, H, W, 1]`` float32 images (values in [0, 1]) of the factor rows ``[n, k]``."""
        raise NotImplementedError

    def check_factors(self, factors) -> np.ndarray:
        """``factors`` as ``[n, k]`` int64, or a ValueError naming the factor out of range."""
        factors = np.asarray(factors)
        if factors.ndim != 2 or factors.shape[1] != self.num_factors:
            raise ValueError(f"factors must be [n, {self.num_factors}] ({', '.join(self.factor_names)}), "
                             f"got shape {factors.shape}.")
        for j, (name, size) in enumerate(zip(self.factor_names, self.factor_sizes)):
            if len(factors) and (factors[:, j].min() < 0 or factors[:, j].max() >= size):
                raise ValueError(f"Factor {name!r} takes values 0..{size - 1}, got values in "
                                 f"[{factors[:, j].min()}, {factors[:, j].max()}].")
        return factors.astype(np.int64)

    def factors_of(self, index) -> np.ndarray:
        """The factor rows ``[n, k]`` of grid indices ``[n]``."""
        index = np.asarray(index, dtype=np.int64)
        if index.size and (index.min() < 0 or index.max() >= len(self)):
            raise ValueError(f"Grid indices go from 0 to {len(self) - 1}, got values in [{index.min()}, {index.max()}].")
        return np.stack(np.unravel_index(index, self.factor_sizes), axis=-1).astype(np.int64)

    def index_of(self, factors) -> np.ndarray:
        """The grid indices ``[n]`` of factor rows ``[n, k]``."""
        return np.ravel_multi_index(tuple(self.check_factors(factors).T), self.factor_sizes).astype(np.int64)

    def sample_factors(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` factor rows drawn uniformly from the grid."""
        return np.stack([rng.integers(0, size, n) for size in self.factor_sizes], axis=1).astype(np.int64)

    def sample_with_fixed(self, n: int, factor: int | str, rng: np.random.Generator, value: int | None = None):
        """``n`` factor rows that share one value of ``factor`` (drawn, or ``value``); the others drawn.

        What the beta-VAE and FactorVAE scores are built on: "fix one factor, draw the rest".
        """
        j = self.factor_names.index(factor) if factor in self.factor_names else factor
        if isinstance(j, str) or not 0 <= int(j) < self.num_factors:
            raise ValueError(f"Unknown factor {factor!r}; the factors: {', '.join(self.factor_names)}.")
        rows = self.sample_factors(n, rng)
        rows[:, j] = rng.integers(0, self.factor_sizes[j]) if value is None else value
        return self.check_factors(rows)

    def observations(self, factors, rng: np.random.Generator | None = None) -> np.ndarray:
        """The images of ``factors`` (deterministic: ``rng`` is accepted for the sampler interface)."""
        return self.images(factors)

    def chunks(self, chunk_size: int = 4096, start: int = 0, stop: int | None = None):
        """Yield ``(images, factors)`` over the grid in index order, ``chunk_size`` examples at a time."""
        stop = len(self) if stop is None else min(stop, len(self))
        for first in range(start, stop, chunk_size):
            factors = self.factors_of(np.arange(first, min(first + chunk_size, stop)))
            yield self.images(factors), factors

    #: Grid examples held out as the ``test`` split of :meth:`split_indices` (a fixed random draw).
    TEST_SIZE = 10_000

    def split_indices(self, split: str = "train") -> np.ndarray:
        """Grid indices of a split: ``"test"`` is a fixed random draw of :data:`TEST_SIZE` examples
        (seed 0), ``"train"`` the rest, in a fixed random order (so ``[:n]`` is a random subset)."""
        if split not in ("train", "test"):
            raise ValueError(f"Unknown split {split!r} of a factor grid; valid choices: train, test.")
        order = self._split_order
        return order[-self.TEST_SIZE:] if split == "test" else order[:-self.TEST_SIZE]

    @functools.cached_property
    def _split_order(self) -> np.ndarray:
        order = np.random.default_rng(0).permutation(len(self))
        order.flags.writeable = False  # shared by every call: callers get read-only views
        return order

    def split_dataset(self, split: str = "train", batch_size: int = 64, shuffle: bool | None = None,
                      seed: int | None = None, limit: int | None = None) -> tf.data.Dataset:
        """One pass over a split (:meth:`split_indices`) as batches of images, drawn batch by batch.

        The training split is reshuffled each epoch; ``limit`` keeps its first ``limit`` examples
        (a fixed random subset of the grid).
        """
        index = self.split_indices(split)[:limit]
        shuffle = split == "train" if shuffle is None else shuffle
        table = tf.constant(index)
        shape = self.images(self.factors_of(index[:1])).shape[1:]
        ds = tf.data.Dataset.range(len(index))
        if shuffle:
            ds = ds.shuffle(len(index), seed=seed, reshuffle_each_iteration=True)

        def render(rows):
            return self.images(self.factors_of(rows))

        ds = ds.batch(batch_size).map(
            lambda i: tf.ensure_shape(tf.numpy_function(render, [tf.gather(table, i)], tf.float32), (None, *shape)),
            num_parallel_calls=tf.data.AUTOTUNE)
        return ds

    def dataset(self, batch_size: int = 64, seed: int = 0, with_factors: bool = False, limit: int | None = None):
        """An endless ``tf.data`` stream of shuffled batches of the grid (images drawn lazily, batch by batch).

        Each pass visits the first ``limit`` (default all) grid examples once, in a new order.
        """
        size = len(self) if limit is None else min(limit, len(self))
        shape = self.images(self.factors_of(np.zeros(1, np.int64))).shape[1:]

        def render(index):
            factors = self.factors_of(index)
            return self.images(factors), factors

        ds = tf.data.Dataset.range(size).shuffle(min(size, 1 << 20), seed=seed, reshuffle_each_iteration=True)
        ds = ds.repeat().batch(batch_size, drop_remainder=True)
        ds = ds.map(lambda i: tf.numpy_function(render, [i], (tf.float32, tf.int64)),
                    num_parallel_calls=tf.data.AUTOTUNE)
        ds = ds.map(lambda x, f: (tf.ensure_shape(x, (batch_size, *shape)),
                                  tf.ensure_shape(f, (batch_size, self.num_factors))))
        if not with_factors:
            ds = ds.map(lambda x, f: x)
        return ds.prefetch(tf.data.AUTOTUNE).with_options(_options())


class SpriteGrid(FactorData):
    """vaezoo's own dSprites-style grid: every combination of 3 shapes x 6 scales x 40 orientations x
    32 x 32 positions (737,280 binary images, 64x64 by default), drawn on demand, never stored.

    Shapes are :data:`SPRITE_SHAPES`; scale index s is 0.5 + 0.1 s of the largest size; orientation o
    is 2 pi o / 40; positions are 32 even steps across the frame (inside its margin). Same factor
    layout as dSprites (Matthey et al. 2017) without its constant colour, so :class:`DSprites` reads
    the published file with the same interface.

    >>> grid = SpriteGrid()
    >>> len(grid), grid.factor_sizes
    (737280, (3, 6, 40, 32, 32))
    >>> images = grid.images(grid.sample_with_fixed(8, "shape", np.random.default_rng(0)))   # 8 of one shape
    """

    factor_names = ("shape", "scale", "orientation", "x", "y")
    factor_sizes = (3, 6, 40, 32, 32)

    def __init__(self, size: int = 64):
        if size < 8:
            raise ValueError(f"size must be at least 8 pixels, got {size}.")
        self.size = int(size)

    def images(self, factors) -> np.ndarray:
        f = self.check_factors(factors)
        values = {"shape": f[:, 0], "scale": np.linspace(0.5, 1.0, 6)[f[:, 1]], "rotation": 2 * np.pi * f[:, 2] / 40,
                  "x": f[:, 3] / 31.0, "y": f[:, 4] / 31.0}
        return render_sprites(values, size=self.size)


class DSprites(FactorData):
    """The published dSprites file (``dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz``, Matthey et al. 2017)
    with the interface of :class:`SpriteGrid`: its images, factors (shape, scale, orientation, x, y)
    and sampling. Found in ``data_dir`` (or ``$VAEZOO_DATA_DIR``, or a ``dsprites/`` folder in it).
    The images are held in memory as uint8 (3 GB)."""

    FILENAME = "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz"
    factor_names = SpriteGrid.factor_names
    factor_sizes = SpriteGrid.factor_sizes

    def __init__(self, data_dir=None):
        path = _find(self.FILENAME, "dsprites", data_dir)
        try:
            with np.load(path) as npz:
                self._images = npz["imgs"]
                classes = npz["latents_classes"]
        except (EOFError, OSError, KeyError, ValueError, zipfile.BadZipFile, zlib.error) as exc:
            raise DataError(f"{path} is not a readable dSprites file ({type(exc).__name__}: {exc}).") from None
        if len(self._images) != len(self) or not np.array_equal(classes[:, 1:], self.factors_of(np.arange(len(self)))):
            raise DataError(f"{path} does not hold dSprites' grid of {len(self)} images in factor order.")

    def images(self, factors) -> np.ndarray:
        return self._images[self.index_of(factors)][..., None].astype(np.float32)


def factor_data(name: str = "sprites_grid", data_dir=None, size: int = 64) -> FactorData:
    """Images with known factors by name: ``"sprites_grid"`` (vaezoo's own, ``size`` pixels) or
    ``"dsprites"`` (the published file, from ``data_dir``)."""
    if name == "sprites_grid":
        return SpriteGrid(size)
    if name == "dsprites":
        return DSprites(data_dir)
    raise ValueError(f"Unknown data set with factors {name!r}; valid choices: sprites_grid, dsprites.")


# --------------------------------------------------------------------------------------------
# Pipelines
# --------------------------------------------------------------------------------------------


def dynamic_binarize(ds: tf.data.Dataset, seed: int | None = None, fixed: bool = False) -> tf.data.Dataset:
    """Replace each image x in [0, 1] by a Bernoulli(x) draw.

    ``fixed=False`` (training): a fresh draw every epoch, from stateless seeds of
    ``tf.data.Dataset.random(seed, rerandomize_each_iteration=True)``, so a fixed ``seed`` gives a
    reproducible sequence of epochs (together with the global seed, which tf.data combines with it).
    ``fixed=True`` (evaluation): the same draw on every pass, from the stateless seeds
    ``(seed, batch index)`` alone, so ``seed`` pins one set of binary images whatever the global
    seed (``keras.utils.set_random_seed``) is. Works on single images or whole batches (one
    vectorised draw per batch is much faster), and on ``(images, labels, ...)`` elements, whose other parts
    pass unchanged beside the binarized images.
    """
    if fixed:
        if seed is None:
            raise ValueError("A fixed binarization needs a seed (an int).")
        seeds = tf.data.Dataset.counter().map(lambda i: tf.stack([tf.constant(int(seed), tf.int64), i]))
    else:
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)

    def binary(x, s):
        return tf.cast(tf.random.stateless_uniform(tf.shape(x), seed=s) < x, x.dtype)

    def draw(element, s):
        # (images, labels, ...) elements keep their other parts beside the binarized images, in one pass: two
        # passes over a reshuffling pipeline (one for the images, one for the labels) would pair them wrongly.
        if isinstance(element, tuple):
            return (binary(element[0], s), *element[1:])
        return binary(element, s)

    return tf.data.Dataset.zip(ds, seeds).map(draw, num_parallel_calls=tf.data.AUTOTUNE)


def _options() -> tf.data.Options:
    # tf.data's autotuner off: tearing down an iterator (every epoch in Keras' fit) waits for the
    # autotune thread, whose sleep doubles from 10 ms, adding up to seconds per epoch; without it,
    # AUTOTUNE parallelism is the number of cores. Measured in benchmarks/throughput.py.
    options = tf.data.Options()
    options.autotune.enabled = False
    return options


def _finish(ds, binarize, seed, shuffle=True):
    if binarize not in BINARIZE:
        raise ValueError(f"Unknown binarize {binarize!r}; valid choices: {', '.join(BINARIZE)}.")
    if binarize == "dynamic":
        # An unshuffled split with a seed (a test set) is binarized once: the same images on every pass.
        fixed = not shuffle and seed is not None
        ds = dynamic_binarize(ds, seed=seed, fixed=fixed)  # (images, labels) pairs stay together
    return ds.prefetch(tf.data.AUTOTUNE).with_options(_options())


def _stream(ds, size, batch_size, shuffle, seed, binarize, limit):
    """A pipeline over a stream of single images or ``(image, label)`` pairs: a shuffle buffer of up to
    60,000 (``size`` unknown: 10,000)."""
    if limit is not None:
        ds, size = ds.take(limit), limit if size is None else min(size, limit)
    if shuffle:
        ds = ds.shuffle(min(size or 10_000, 60_000), seed=seed, reshuffle_each_iteration=True)
    return _finish(ds.batch(batch_size), binarize, seed, shuffle)


def subset(n: int, limit: int | None) -> np.ndarray:
    """The indices (sorted) of ``limit`` of ``n`` examples, a random subset drawn with the fixed
    :data:`vaezoo.sources.SPLIT_SEED` (the same for every run), or all of them."""
    if limit is None or limit >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(sources.SPLIT_SEED).choice(n, size=limit, replace=False))


def _in_memory(images: np.ndarray, batch_size, shuffle, seed, binarize, limit, labels=None):
    """A pipeline over images held in memory: each epoch shuffles the indices (a full permutation)
    and gathers a batch at a time, rather than filling a shuffle buffer with the images themselves.
    ``uint8`` images (0..255) are kept so in memory and scaled to float32 [0, 1] batch by batch."""
    if limit is not None:
        keep = subset(len(images), limit)
        images = images[keep]
        labels = None if labels is None else labels[keep]
    table = tf.constant(images)
    label_table = None if labels is None else tf.constant(np.asarray(labels, np.int32))
    ds = tf.data.Dataset.range(len(images))
    if shuffle:
        ds = ds.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)

    def gather(index):
        x = tf.gather(table, index)
        x = tf.cast(x, tf.float32) / 255.0 if x.dtype == tf.uint8 else tf.cast(x, tf.float32)
        return x if label_table is None else (x, tf.gather(label_table, index))

    ds = ds.batch(batch_size).map(gather, num_parallel_calls=tf.data.AUTOTUNE)
    return _finish(ds, binarize, seed, shuffle)


def _tfds(name: str, split: str, data_dir, labels: bool = False):
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except Exception as exc:
        raise ValueError(f"tensorflow-datasets has no data set {name!r}: {exc}") from None
    try:
        builder.download_and_prepare()
        ds = builder.as_dataset(split=split)
    except Exception as exc:  # noqa: BLE001  (requests/urllib/tfds errors: no common base class)
        raise DataError(
            f"tensorflow-datasets could not download or prepare {name!r} ({type(exc).__name__}: {str(exc)[:200]}). "
            f"On a machine without internet, prepare it where there is one and pass its tfds folder as "
            f"data_dir (CLI: --data-dir)."
        ) from None
    if "image" not in ds.element_spec:
        raise ValueError(f"tfds:{name} has no 'image' feature (features: {sorted(ds.element_spec)}).")
    if labels and "label" not in ds.element_spec:
        raise DataError(f"tfds:{name} has no 'label' feature (features: {sorted(ds.element_spec)}); load it "
                        "with labels=False.")
    size = builder.info.splits[split].num_examples
    names = None
    if labels:
        feature = builder.info.features["label"]
        names = tuple(feature.names) if hasattr(feature, "names") else None
        ds = ds.map(lambda ex: (tf.cast(ex["image"], tf.float32) / 255.0, tf.cast(ex["label"], tf.int32)),
                    num_parallel_calls=tf.data.AUTOTUNE)
    else:
        ds = ds.map(lambda ex: tf.cast(ex["image"], tf.float32) / 255.0, num_parallel_calls=tf.data.AUTOTUNE)
    return ds, size, names


def _user_stream(ds: tf.data.Dataset, split: str, validation_split: float, labels: bool, color_mode, image_size):
    """A user's ``tf.data.Dataset`` as single float32 images in [0, 1] (or ``(image, label)``), split by a
    fixed per-example draw (``validation_split`` of the examples validate; :data:`sources.SPLIT_SEED`)."""
    if split not in sources.USER_SPLITS:
        raise ValueError(f"Unknown split {split!r} of a user's data; valid choices: {', '.join(sources.USER_SPLITS)}.")
    spec = ds.element_spec
    if isinstance(spec, dict):
        if "image" not in spec:
            raise DataError(f"The dataset's elements are dicts without 'image' (keys: {', '.join(spec)}).")
        has_labels = "label" in spec
        ds = ds.map(lambda ex: (ex["image"], ex["label"]) if has_labels else ex["image"])
    elif isinstance(spec, tuple):
        if len(spec) != 2:
            raise DataError(f"The dataset's elements must be images or (image, label) pairs, got {len(spec)} parts.")
        has_labels = True
    else:
        has_labels = False
    image_spec = ds.element_spec[0] if has_labels else ds.element_spec
    if image_spec.shape.rank == 4:  # batched (image_dataset_from_directory): one example at a time
        ds, image_spec = ds.unbatch(), tf.TensorSpec(image_spec.shape[1:], image_spec.dtype)
    if image_spec.shape.rank == 2:
        ds = ds.map(lambda *e: (e[0][..., None], *e[1:]) if has_labels else e[0][..., None])
    elif image_spec.shape.rank != 3:
        raise DataError(f"The dataset's images must be [H, W] or [H, W, C] (or batches of them), got shape "
                        f"{image_spec.shape}.")
    if labels and not has_labels:
        raise DataError("The dataset has no labels: give (image, label) elements or load it with labels=False.")
    for first in ds.take(1):  # the value range of the first example, as for an array
        sources.check_images(np.asarray(first[0] if has_labels else first)[None], what="the dataset's images")
    integer = image_spec.dtype.is_integer

    def scale(x):
        x = tf.cast(x, tf.float32) / 255.0 if integer else tf.cast(x, tf.float32)
        if color_mode == "grayscale" and x.shape[-1] == 3:
            x = tf.image.rgb_to_grayscale(x)
        elif color_mode == "rgb" and x.shape[-1] == 1:
            x = tf.image.grayscale_to_rgb(x)
        if image_size is not None:
            x = keras_smart_resize(x, image_size)
        return x

    ds = ds.map(lambda *e: (scale(e[0]), tf.cast(e[1], tf.int32)) if has_labels else scale(e[0]),
                num_parallel_calls=tf.data.AUTOTUNE)
    if split != "all":
        sources.partition(2, validation_split)  # checks the fraction
        fraction = float(validation_split)
        held_out = split != "train"
        ds = ds.enumerate().filter(lambda i, *e: (tf.random.stateless_uniform(
            [], seed=tf.stack([tf.constant(sources.SPLIT_SEED, tf.int64), i])) < fraction) == held_out)
        ds = ds.map(lambda i, *e: e if len(e) > 1 else e[0])
    if not labels and has_labels:
        ds = ds.map(lambda x, y: x)
    return ds


def keras_smart_resize(x, image_size):
    import keras

    return tf.clip_by_value(keras.preprocessing.image.smart_resize(x, sources._image_size(image_size)), 0.0, 1.0)


def from_config(cfg: Mapping[str, Any], split: str, *, data_dir=None, seed=None, limit=None, shuffle=None,
                labels: bool = False) -> tf.data.Dataset:
    """:func:`load` with the data keys of a model config (``dataset``, ``batch_size``, ``binarize``,
    ``image_size``, ``color_mode``, ``validation_split``): the data a run of that config trains on."""
    return load(cfg["dataset"], split=split, batch_size=cfg["batch_size"], data_dir=data_dir,
                binarize=cfg["binarize"], shuffle=shuffle, seed=seed, limit=limit, image_size=cfg.get("image_size"),
                color_mode=cfg.get("color_mode"),
                validation_split=cfg.get("validation_split", sources.DEFAULT_VALIDATION_SPLIT), labels=labels)


def load(
    source="mnist",
    split: str = "train",
    batch_size: int = 128,
    data_dir: str | os.PathLike | None = None,
    binarize: str = "none",
    shuffle: bool | None = None,
    seed: int | None = None,
    limit: int | None = None,
    labels: bool = False,
    image_size=None,
    color_mode: str | None = None,
    validation_split: float = sources.DEFAULT_VALIDATION_SPLIT,
    cache: bool = True,
) -> tf.data.Dataset:
    """A batched, shuffled (training split by default), prefetched dataset of float32 images in [0, 1].

    Args:
        source: a registered name (``"mnist"``, ``"binarized_mnist"``, ``"sprites"`` (32x32, 20,000 drawn
            at random), ``"sprites_grid"`` (the full 64x64 factor grid of :class:`SpriteGrid`, drawn batch by
            batch; ``test`` holds 10,000 grid examples out)), ``"tfds:<name>"``, a folder of images, an
            ``.npz``/``.npy`` file, an array, ``(x, y)`` or a ``tf.data.Dataset``: see :mod:`vaezoo.sources`.
        split: ``"train"`` / ``"test"`` (binarized MNIST also ``"valid"``; tfds any split string; a user's
            data ``"train"``, ``"validation"`` (or ``"valid"``), ``"test"``, ``"all"``).
        batch_size: examples per batch.
        data_dir: folder of the files (MNIST, binarized MNIST) or tfds data dir; default
            ``$VAEZOO_DATA_DIR``.
        binarize: ``"dynamic"`` or ``"none"`` (binarized MNIST and sprites are already binary). A
            dynamic binarization draws anew each epoch, except on an unshuffled split with a ``seed``
            (a test set): that is binarized once, the same images on every pass, pinned by ``seed`` and
            ``batch_size`` alone (not by the global seed).
        shuffle: defaults to ``split == "train"``.
        seed: shuffling and binarization seed.
        limit: keep a random subset of ``limit`` examples, the same for every run (drawn with the fixed
            :data:`vaezoo.sources.SPLIT_SEED`, not ``seed``; a stream keeps its first ``limit``).
        labels: batches are ``(images, labels)`` (int32), for conditional models; a source without labels
            is refused. The dataset's ``class_names`` attribute lists the label names when known.
        image_size: ``(height, width)`` (or one int): centre-crop each image to that aspect ratio, then
            resize bilinearly (``keras.preprocessing.image.smart_resize``). Without it a folder's images must
            all have one size.
        color_mode: ``"grayscale"`` or ``"rgb"`` (converted), or None: as stored (a folder is grey when all
            its files are).
        validation_split: the fraction of a user's data held out as its validation split (fixed seed).
        cache: a stream (tfds, a user's dataset) is cached in memory after its first pass.

    Raises:
        ValueError: an unknown source name or split, a bad argument (each names the valid choices).
        DataError: a missing or unreadable file, an empty folder, images or labels that do not fit.
    """
    for key, value, allow_none in (("batch_size", batch_size, False), ("limit", limit, True)):
        if value is None and allow_none:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{key} must be an integer >= 1, got {value!r}.")
    shuffle = split == "train" if shuffle is None else shuffle
    kind, what = sources.read_source(source, data_dir, color_mode=color_mode, image_size=image_size)
    if kind == "tfds":
        ds, size, names = _tfds(what, split, data_dir, labels)
        ds = ds.cache() if cache else ds
        if image_size is not None or color_mode is not None:
            raise ValueError("image_size and color_mode apply to a user's data and the registered data sets, "
                             "not to tfds: (map the dataset yourself).")
        return _named(_stream(ds, size, batch_size, shuffle, seed, binarize, limit), names)
    if kind == "stream":
        ds = _user_stream(what, split, validation_split, labels, color_mode, image_size)
        ds = ds.cache() if cache else ds
        return _named(_stream(ds, None, batch_size, shuffle, seed, binarize, limit), None)
    part = _read_registered(source, what, split, data_dir) if kind == "registered" else None
    if part is not None and part.pipeline is not None:
        if labels:
            raise DataError(f"{source!r} is drawn batch by batch without labels; load it with labels=False.")
        return _finish(part.pipeline(batch_size, shuffle, seed, limit), binarize, seed, shuffle)
    images, part = _in_memory_split(source, kind, what, split, data_dir, color_mode, image_size, validation_split,
                                    labels, part)
    ds = _in_memory(images, batch_size, shuffle, seed, binarize, limit, part.labels if labels else None)
    return _named(ds, part.class_names)


def _read_registered(source, reader, split, data_dir) -> sources.Split:
    part = reader(split, data_dir)
    if not isinstance(part, sources.Split):
        raise TypeError(f"The reader of {source!r} returned {type(part).__name__}, not a vaezoo.sources.Split.")
    return part


def _in_memory_split(source, kind, what, split, data_dir, color_mode, image_size, validation_split, labels,
                     part=None):
    """The checked images and the :class:`vaezoo.sources.Split` of an in-memory source (registered or a
    user's arrays, folder or file; ``part``: a registered split already read); a split without labels is
    refused when ``labels``."""
    if kind == "registered":
        part = part or _read_registered(source, what, split, data_dir)
        if part.pipeline is not None:
            raise DataError(f"{source!r} is drawn batch by batch, not held in memory.")
        images = sources.check_images(part.images, what=str(source)) if part.images.dtype != np.float32 else part.images
        images = sources.convert_colors(images, color_mode, what=str(source))
        if image_size is not None:
            images = sources.resize(images, image_size)
    elif kind == "arrays":
        part = what.split(split, validation_split)
        images = part.images
    else:
        raise DataError(f"{_shown(source)} is a stream; this needs a source held in memory (a registered data set, "
                        "a folder, an .npz/.npy file or arrays).")
    if labels and part.labels is None:
        raise DataError(f"{_shown(source)} has no labels (a folder gives them through class sub-folders, an .npz "
                        "through an array y); load it with labels=False.")
    return images, part


#: The label of an unlabelled example in a semi-supervised batch (:func:`semi_supervised`).
UNLABELED = -1


def semi_supervised(
    source,
    num_labels: int,
    batch_size: int = 100,
    labeled_batch_size: int | None = None,
    seed: int = 0,
    data_dir=None,
    binarize: str = "dynamic",
    image_size=None,
    color_mode: str | None = None,
    validation_split: float = sources.DEFAULT_VALIDATION_SPLIT,
    label_seed: int = 0,
) -> tf.data.Dataset:
    """Training batches of a few labelled examples mixed with many unlabelled ones, for semi-supervised models.

    ``num_labels`` examples of the training split keep their labels, the same number of each class (the
    "100 labels, 10 per class" of Kingma et al. 2014), drawn with ``label_seed``; every other training example
    is unlabelled. Each batch is ``(images, labels)`` of ``batch_size`` unlabelled examples (label
    :data:`UNLABELED`, -1) followed by ``labeled_batch_size`` labelled ones (default: ``batch_size // 10``,
    at least 1). An epoch is one pass over the unlabelled examples; the small labelled set is reshuffled and
    repeated as often as that takes, so every step sees both kinds.

    Example:

    >>> ds = vaezoo.data.semi_supervised("mnist", num_labels=100)     # doctest: +SKIP
    >>> x, y = next(iter(ds))                                         # doctest: +SKIP
    >>> (y.numpy() >= 0).sum()                                        # 10 labelled, 100 unlabelled
    10

    Raises:
        DataError: a source without labels, or a class with fewer than ``num_labels / classes`` examples.
        ValueError: ``num_labels`` that is not a multiple of the number of classes.

    References:
        Kingma, Rezende, Mohamed & Welling, "Semi-Supervised Learning with Deep Generative Models", NeurIPS 2014.
    """
    for key, value in (("num_labels", num_labels), ("batch_size", batch_size),
                       ("labeled_batch_size", 1 if labeled_batch_size is None else labeled_batch_size)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{key} must be an integer >= 1, got {value!r}.")
    kind, what = sources.read_source(source, data_dir, color_mode=color_mode, image_size=image_size)
    images, part = _in_memory_split(source, kind, what, "train", data_dir, color_mode, image_size, validation_split,
                                    labels=True)
    labels = np.asarray(part.labels, np.int64)
    classes = np.unique(labels)
    if num_labels % len(classes):
        raise ValueError(f"num_labels={num_labels} must be a multiple of the {len(classes)} classes of "
                         f"{_shown(source)} (the same number of labels per class).")
    per_class = num_labels // len(classes)
    rng = np.random.default_rng(label_seed)
    chosen = []
    for c in classes:
        members = np.flatnonzero(labels == c)
        if len(members) < per_class:
            raise DataError(f"class {c} of {_shown(source)} has {len(members)} training examples, fewer than the "
                            f"{per_class} labels per class that num_labels={num_labels} asks for.")
        chosen.append(rng.choice(members, size=per_class, replace=False))
    labelled = np.sort(np.concatenate(chosen))
    rest = np.setdiff1d(np.arange(len(images)), labelled)
    labeled_batch_size = max(1, batch_size // 10) if labeled_batch_size is None else int(labeled_batch_size)
    unlabelled_ds = _in_memory(images[rest], batch_size, True, seed, binarize, None,
                               np.full(len(rest), UNLABELED, np.int32))
    labelled_ds = _in_memory(images[labelled], labeled_batch_size, True, seed, binarize, None,
                             labels[labelled]).unbatch().batch(labeled_batch_size, drop_remainder=True).repeat()
    mixed = tf.data.Dataset.zip(unlabelled_ds, labelled_ds).map(
        lambda u, l: (tf.concat([u[0], l[0]], axis=0), tf.concat([u[1], tf.cast(l[1], u[1].dtype)], axis=0)))
    ds = mixed.prefetch(tf.data.AUTOTUNE).with_options(_options())
    ds.labelled_indices = labelled  # which training examples carry labels
    return _named(ds, part.class_names)


def _named(ds: tf.data.Dataset, class_names) -> tf.data.Dataset:
    ds.class_names = None if class_names is None else list(class_names)
    return ds


def _shown(source) -> str:
    return repr(os.fspath(source)) if isinstance(source, (str, os.PathLike)) else f"The {type(source).__name__}"


def source_info(source, data_dir=None, image_size=None, color_mode=None, validation_split=None) -> dict:
    """What a source holds, read once: ``{"user": bool, "image_shape": [H, W, C] or None, "binary": bool or
    None, "num_examples": N or None, "num_classes": K or None, "class_names": [...] or None}`` (the
    training split; None where a stream does not say without a pass over it)."""
    kind, what = sources.read_source(source, data_dir, color_mode=color_mode, image_size=image_size)
    info = {"user": kind in ("arrays", "stream"), "image_shape": None, "binary": None, "num_examples": None,
            "num_classes": None, "class_names": None}
    if kind == "arrays":
        x, y = what.x, what.y
        info.update(image_shape=list(x.shape[1:]), num_examples=len(x), class_names=
                    None if what.class_names is None else list(what.class_names),
                    binary=bool(np.isin(x, (0, 255) if x.dtype == np.uint8 else (0.0, 1.0)).all()))
        if y is not None:
            info["num_classes"] = len(what.class_names) if what.class_names else int(y.max()) + 1
    return info


def suggested_config(info: dict) -> dict:
    """Training settings that suit a user's data (:func:`source_info`) where the model's defaults assume
    MNIST: no dynamic binarization, and a likelihood for the values the data has: ``bernoulli`` for
    binary images, ``gaussian_learned_scale`` (one learned scale per pixel) for grey levels or colour."""
    if not info.get("user"):
        return {}
    out = {"binarize": "none"}
    if info.get("binary") is not None:
        out["likelihood"] = "bernoulli" if info["binary"] else "gaussian_learned_scale"
    return out


# --------------------------------------------------------------------------------------------
# The registered data sets
# --------------------------------------------------------------------------------------------


@register_dataset("mnist")
def _mnist(split, data_dir=None):
    images, labels = mnist_arrays(split, data_dir)
    return sources.Split(images, labels, tuple(str(i) for i in range(10)))


@register_dataset("binarized_mnist", validation="valid", splits=("train", "valid", "test"))
def _binarized_mnist(split, data_dir=None):
    return sources.Split(binarized_mnist_arrays(split, data_dir))


@register_dataset("sprites")
def _sprites(split, data_dir=None):
    images, factors = sprites_arrays(split)
    return sources.Split(images, factors["shape"].astype(np.int64), SPRITE_SHAPES)


@register_dataset("sprites_grid")
def _sprites_grid(split, data_dir=None):
    def pipeline(batch_size, shuffle, seed, limit):
        return SpriteGrid(64).split_dataset(split, batch_size, shuffle=shuffle, seed=seed, limit=limit)

    return sources.Split(pipeline=pipeline)


def count_examples(ds: tf.data.Dataset) -> int:
    """The number of examples of a finite batched data set (batches of images or ``(images, labels)``)."""
    sizes = ds.map(lambda *batch: tf.shape(tf.nest.flatten(batch)[0])[0])
    return int(sizes.reduce(tf.constant(0), lambda total, n: total + n))


def codes_dataset(vqvae, images: tf.data.Dataset) -> tf.data.Dataset:
    """Map a dataset of image batches to batches of a VQ-VAE's code indices (int32).

    The training data of a prior over codes: ``[B, h, w]`` maps for a ``vq_vae``
    (:class:`vaezoo.models.pixelcnn.PixelCNNPrior`), dicts ``{"top": ..., "bottom": ...}`` for a
    ``vq_vae2`` (:class:`vaezoo.models.pixelcnn.HierarchicalPixelCNNPrior`).
    """
    levels = getattr(vqvae, "code_levels", None)

    def encode(x):
        codes = vqvae.encode(x)
        return dict(zip(levels, codes)) if levels else codes

    return images.map(encode, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
