"""tf.data pipelines for vaezoo: MNIST, binarized MNIST, procedural sprites, any tfds name.

All pipelines yield float32 images ``[B, H, W, C]`` with values in [0, 1] (inputs only, no
labels), batched, shuffled (training split) and prefetched.

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

import numpy as np
import tensorflow as tf

from vaezoo import config as _config

DATA_DIR_ENV = "VAEZOO_DATA_DIR"


class DataError(ValueError):
    """A data file is corrupt or truncated, or a data set cannot be fetched; the message names it."""


DATASETS = ("mnist", "binarized_mnist", "sprites", "sprites_grid", "tfds:<name>")
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
    vectorised draw per batch is much faster).
    """
    if fixed:
        if seed is None:
            raise ValueError("A fixed binarization needs a seed (an int).")
        seeds = tf.data.Dataset.counter().map(lambda i: tf.stack([tf.constant(int(seed), tf.int64), i]))
    else:
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)

    def draw(x, s):
        return tf.cast(tf.random.stateless_uniform(tf.shape(x), seed=s) < x, x.dtype)

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
        ds = dynamic_binarize(ds, seed=seed, fixed=not shuffle and seed is not None)
    return ds.prefetch(tf.data.AUTOTUNE).with_options(_options())


def _stream(ds, size, batch_size, shuffle, seed, binarize, limit):
    """A pipeline over a stream of images (tfds): a shuffle buffer of up to 60,000 images."""
    if limit is not None:
        ds, size = ds.take(limit), min(size, limit)
    if shuffle:
        ds = ds.shuffle(min(size, 60_000), seed=seed, reshuffle_each_iteration=True)
    return _finish(ds.batch(batch_size), binarize, seed, shuffle)


def _in_memory(images: np.ndarray, batch_size, shuffle, seed, binarize, limit):
    """A pipeline over images held in memory: each epoch shuffles the indices (a full permutation)
    and gathers a batch at a time, rather than filling a shuffle buffer with the images themselves."""
    if limit is not None:
        images = images[:limit]
    table = tf.constant(images)
    ds = tf.data.Dataset.range(len(images))
    if shuffle:
        ds = ds.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size).map(lambda index: tf.gather(table, index), num_parallel_calls=tf.data.AUTOTUNE)
    return _finish(ds, binarize, seed, shuffle)


def _tfds(name: str, split: str, data_dir):
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
    size = builder.info.splits[split].num_examples
    return ds.map(lambda ex: tf.cast(ex["image"], tf.float32) / 255.0, num_parallel_calls=tf.data.AUTOTUNE), size


def load(
    name: str,
    split: str = "train",
    batch_size: int = 128,
    data_dir: str | os.PathLike | None = None,
    binarize: str = "none",
    shuffle: bool | None = None,
    seed: int | None = None,
    limit: int | None = None,
) -> tf.data.Dataset:
    """A batched, shuffled (training split by default), prefetched dataset of images in [0, 1].

    Args:
        name: ``"mnist"``, ``"binarized_mnist"``, ``"sprites"`` (32x32, 20,000 drawn at random),
            ``"sprites_grid"`` (the full 64x64 factor grid of :class:`SpriteGrid`, drawn batch by batch;
            ``test`` holds 10,000 grid examples out) or ``"tfds:<name>"``.
        split: ``"train"`` / ``"test"`` (binarized MNIST also ``"valid"``; tfds any split string).
        batch_size: examples per batch.
        data_dir: folder of the files (MNIST, binarized MNIST) or tfds data dir; default
            ``$VAEZOO_DATA_DIR``.
        binarize: ``"dynamic"`` or ``"none"`` (binarized MNIST and sprites are already binary). A
            dynamic binarization draws anew each epoch, except on an unshuffled split with a ``seed``
            (a test set): that is binarized once, the same images on every pass, pinned by ``seed`` and
            ``batch_size`` alone (not by the global seed).
        shuffle: defaults to ``split == "train"``.
        seed: shuffling and binarization seed.
        limit: keep only the first ``limit`` examples.
    """
    for key, value, allow_none in (("batch_size", batch_size, False), ("limit", limit, True)):
        if value is None and allow_none:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{key} must be an integer >= 1, got {value!r}.")
    shuffle = split == "train" if shuffle is None else shuffle
    if name.startswith("tfds:"):
        ds, size = _tfds(name[5:], split, data_dir)
        return _stream(ds, size, batch_size, shuffle, seed, binarize, limit)
    if name == "mnist":
        images, _ = mnist_arrays(split, data_dir)
    elif name == "binarized_mnist":
        images = binarized_mnist_arrays(split, data_dir)
    elif name == "sprites":
        images, _ = sprites_arrays(split)
    elif name == "sprites_grid":
        ds = SpriteGrid(64).split_dataset(split, batch_size, shuffle=shuffle, seed=seed, limit=limit)
        return _finish(ds, binarize, seed, shuffle)
    else:
        raise ValueError(f"Unknown dataset {name!r}; valid choices: {', '.join(DATASETS)}.")
    return _in_memory(images, batch_size, shuffle, seed, binarize, limit)


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
