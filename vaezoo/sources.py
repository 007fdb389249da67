"""Data sources: where a pipeline's images (and labels) come from, by name or by value.

A *source* is one of

* a registered name (``"mnist"``, ``"binarized_mnist"``, ``"sprites"``, ``"sprites_grid"``, or one a plugin
  registers with :func:`register_dataset`), or ``"tfds:NAME"`` (tensorflow-datasets);
* a folder of images (``.png``, ``.jpg``/``.jpeg``, ``.bmp``, ``.gif``, ``.webp``; a GIF gives its first frame). When the
  folder holds sub-folders, each sub-folder is a class: its images (at any depth) get the integer label of
  its position in the sorted list of sub-folder names, ``class_names`` (as
  ``keras.utils.image_dataset_from_directory`` does). Files are decoded by ``tf.io.decode_image``;
* an ``.npz`` file (array ``x``, optional ``y`` labels, optional ``x_test``/``y_test``) or an ``.npy`` file (images);
* in Python: an array ``[N, H, W]`` / ``[N, H, W, C]``, a tuple ``(x, y)``, a dict ``{"x": ..., "y": ...}``
  or a ``tf.data.Dataset`` of single images, ``(image, label)`` pairs or ``{"image", "label"}`` dicts
  (a batched one is unbatched).

Values: ``uint8`` (and other integer) images are 0..255 and scaled by 1/255; float images must already lie
in [0, 1] (a float array with values above 1 is refused with a "/255" hint rather than guessed at).

Splits of a user's data (folder, file, array, dataset): ``"train"`` and ``"validation"`` are a fixed
random partition (``validation_split`` of the examples, default 0.1, drawn with seed 0 whatever the
training seed, so every run validates on the same images), ``"all"`` is everything, and ``"test"`` is the
``.npz``'s ``x_test`` when it has one, else the validation part. Registered data sets have their own
splits (MNIST: train/test; binarized MNIST: train/valid/test); :func:`validation_split_name` says
which one a run validates on.

Example (a plugin's data set, usable as ``vaezoo.data.load("noise")`` and ``vaezoo train vae --data noise``):

>>> import numpy as np
>>> from vaezoo import sources
>>> @sources.register_dataset("noise")
... def noise(split, data_dir=None):
...     rng = np.random.default_rng({"train": 0, "test": 1}[split])
...     return sources.Split(rng.integers(0, 256, (100, 8, 8, 1), dtype=np.uint8))
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import os
import re
from pathlib import Path
from typing import Any, Callable

import numpy as np

from vaezoo import components

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
COLOR_MODES = ("grayscale", "rgb")
USER_SPLITS = ("train", "validation", "valid", "test", "all")
#: The seed of the train/validation partition of a user's data and of ``limit``'s subset: fixed, so that
#: every run of a source sees the same partition and the same subset whatever its training seed.
SPLIT_SEED = 0
DEFAULT_VALIDATION_SPLIT = 0.1


class DataError(ValueError):
    """A data file is corrupt or truncated, a source is empty or malformed, or a data set cannot be fetched;
    the message names the file or value."""


@dataclasses.dataclass
class Split:
    """The examples of one split of a source.

    Attributes:
        images: ``[N, H, W, C]`` ``uint8`` (0..255) or float32 (in [0, 1]) array; or an unbatched
            ``tf.data.Dataset`` of float32 images in [0, 1] (a stream: tfds, a user's dataset), or of
            ``(image, label)`` pairs when ``has_labels``.
        labels: ``[N]`` integer labels or None.
        class_names: the label names (``class_names[label]``) or None.
        size: the number of examples of a stream (None when unknown); arrays know theirs.
        pipeline: instead of ``images``, ``pipeline(batch_size, shuffle, seed, limit)`` returns the batched
            dataset itself (a source drawn batch by batch, such as ``sprites_grid``).
        has_labels: a stream's elements are ``(image, label)``.
    """

    images: Any = None
    labels: np.ndarray | None = None
    class_names: tuple[str, ...] | None = None
    size: int | None = None
    pipeline: Callable[..., Any] | None = None
    has_labels: bool = False

    @property
    def num_examples(self) -> int | None:
        if isinstance(self.images, np.ndarray):
            return len(self.images)
        return self.size


#: name -> reader ``reader(split, data_dir) -> Split``; a reader may set ``validation`` (the split a
#: run validates on, default ``"test"``) and ``splits`` (the valid split names, for messages).
DATASETS = components.ComponentRegistry("dataset")


def register_dataset(name: str, *, override: bool = False, validation: str = "test",
                     splits: tuple[str, ...] = ("train", "test")) -> Callable:
    """Function decorator: register ``reader(split, data_dir) -> Split`` as the data set ``name``.

    ``validation`` names the split a training run validates on; ``splits`` the valid split names.
    Plugins register theirs on import through the entry-point group ``vaezoo.datasets``.
    """
    if not isinstance(name, str) or not name or name.startswith("tfds:") or os.sep in name:
        raise ValueError(f"A data set name must be a non-empty string without {os.sep!r} or 'tfds:', got {name!r}.")

    def decorator(reader):
        reader.validation = validation
        reader.splits = tuple(splits)
        return DATASETS.register(name, override=override)(reader)

    return decorator


def dataset_names() -> tuple[str, ...]:
    """The registered data set names (plugins loaded)."""
    from vaezoo import registry

    registry.load_plugins(group=registry.DATASET_ENTRY_POINT_GROUP)
    return tuple(DATASETS)


def describe_choices() -> str:
    return f"{', '.join(dataset_names())}, tfds:NAME, a folder of images, or an .npz/.npy file"


def looks_like_path(value: str) -> bool:
    """Whether a source string names a file or folder rather than a registered data set."""
    return (os.sep in value or "/" in value or value.startswith(".") or value.lower().endswith((".npz", ".npy"))
            or Path(value).expanduser().exists())


def is_source_name(value: Any) -> bool:
    """The config check of ``dataset``: a registered name, ``tfds:NAME`` or a path (checked when it is read)."""
    if not isinstance(value, str) or not value:
        return False
    return value.startswith("tfds:") and len(value) > 5 or value in dataset_names() or looks_like_path(value)


def validation_split_name(source) -> str:
    """The split a training run on ``source`` validates on: ``"valid"`` for binarized MNIST, ``"test"``
    for the other registered data sets and tfds, ``"validation"`` for a user's data."""
    if isinstance(source, str) and source in dataset_names():
        return DATASETS[source].validation
    if isinstance(source, str) and source.startswith("tfds:"):
        return "test"
    return "validation"


def is_user_data(source) -> bool:
    """A user's own data (a folder, file, array or dataset), not a registered name or tfds."""
    return not (isinstance(source, str) and (source.startswith("tfds:") or source in dataset_names()))


# --------------------------------------------------------------------------------------------
# Checks of a user's arrays
# --------------------------------------------------------------------------------------------


def check_images(x, what: str = "x") -> np.ndarray:
    """``x`` as ``[N, H, W, C]`` uint8 (0..255) or float32 (0..1), or raise :class:`DataError` naming it."""
    x = np.asarray(x)
    if x.dtype == object or x.dtype.kind in "USV":
        raise DataError(f"{what} must be an array of numbers, got dtype {x.dtype}.")
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4:
        raise DataError(f"{what} must hold images [N, H, W] or [N, H, W, C], got shape {x.shape}.")
    if len(x) == 0:
        raise DataError(f"{what} holds no images (shape {x.shape}).")
    if x.dtype == np.bool_:
        return x.astype(np.float32)
    if x.dtype.kind in "iu":
        if x.dtype != np.uint8:
            low, high = int(x.min()), int(x.max())
            if low < 0 or high > 255:
                raise DataError(f"{what} holds integers in [{low}, {high}]; integer images must be 0..255 "
                                "(8-bit), or pass floats in [0, 1].")
            x = x.astype(np.uint8)
        return x
    if x.dtype.kind != "f":
        raise DataError(f"{what} must be an array of numbers, got dtype {x.dtype}.")
    x = x.astype(np.float32, copy=False)
    if not np.isfinite(x).all():
        raise DataError(f"{what} holds non-finite values (NaN or inf).")
    low, high = float(x.min()), float(x.max())
    if low < 0.0 or high > 1.0:
        hint = " (8-bit values as floats: divide by 255, or pass the uint8 array)" if 1.0 < high <= 255.0 else ""
        raise DataError(f"{what} holds floats in [{low:g}, {high:g}]; float images must lie in [0, 1]{hint}.")
    return x


def check_labels(y, n: int, what: str = "y") -> tuple[np.ndarray, tuple[str, ...] | None]:
    """``y`` as ``[n]`` int64 labels and its class names (strings give sorted names), or raise naming it."""
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise DataError(f"{what} must hold one label per image, shape [N], got shape {y.shape}.")
    if len(y) != n:
        raise DataError(f"{what} holds {len(y)} labels for {n} images; give one label per image.")
    if y.dtype.kind in "USO":
        names = tuple(sorted({str(v) for v in y}))
        index = {name: i for i, name in enumerate(names)}
        return np.array([index[str(v)] for v in y], np.int64), names
    if y.dtype.kind == "b":
        y = y.astype(np.int64)
    if y.dtype.kind == "f":
        if not (np.isfinite(y).all() and np.array_equal(y, np.round(y))):
            raise DataError(f"{what} must hold integer labels (or strings), got non-integer floats such as "
                            f"{y[~np.isclose(y, np.round(y))][:1]}.")
        y = y.astype(np.int64)
    if y.dtype.kind not in "iu":
        raise DataError(f"{what} must hold integer labels (or strings), got dtype {y.dtype}.")
    if len(y) and y.min() < 0:
        raise DataError(f"{what} holds a negative label ({int(y.min())}); labels are 0, 1, ...")
    return y.astype(np.int64), None


def convert_colors(x: np.ndarray, color_mode: str | None, what: str = "x") -> np.ndarray:
    """Images ``[N, H, W, C]`` in ``color_mode``: ``"grayscale"`` (1 channel, ITU-R 601 luma of RGB),
    ``"rgb"`` (3; grey repeated), None (as they are). An alpha channel (C = 2 or 4) is dropped first."""
    if color_mode not in (None, *COLOR_MODES):
        raise ValueError(f"Unknown color_mode {color_mode!r}; valid choices: {', '.join(COLOR_MODES)} (or None).")
    channels = x.shape[-1]
    if channels in (2, 4) and color_mode is not None:
        x, channels = x[..., : channels - 1], channels - 1
    if color_mode is None or (color_mode == "grayscale") == (channels == 1):
        return x
    if color_mode == "rgb":
        if channels != 1:
            raise DataError(f"{what} has {channels} channels; color_mode 'rgb' converts 1 (grey) or 3 channels.")
        return np.repeat(x, 3, axis=-1)
    if channels != 3:
        raise DataError(f"{what} has {channels} channels; color_mode 'grayscale' converts 1 or 3 (RGB) channels.")
    luma = x.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    return (np.round(luma).astype(np.uint8) if x.dtype == np.uint8 else luma)[..., None]


def resize(x: np.ndarray, image_size) -> np.ndarray:
    """Images ``[N, H, W, C]`` at ``image_size`` ``(height, width)``: centre-cropped to the target's aspect
    ratio, then resized bilinearly (``keras.preprocessing.image.smart_resize``); the dtype is kept."""
    height, width = _image_size(image_size)
    if x.shape[1:3] == (height, width):
        return x
    import keras

    out = np.asarray(keras.preprocessing.image.smart_resize(x.astype(np.float32), (height, width)))
    if x.dtype == np.uint8:
        return np.clip(np.round(out), 0, 255).astype(np.uint8)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def _image_size(image_size) -> tuple[int, int]:
    if isinstance(image_size, (int, np.integer)) and not isinstance(image_size, bool):
        image_size = (image_size, image_size)
    if (not isinstance(image_size, (list, tuple)) or len(image_size) != 2
            or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 1 for v in image_size)):
        raise ValueError(f"image_size must be (height, width) of integers >= 1 (or one integer), got {image_size!r}.")
    return int(image_size[0]), int(image_size[1])


# --------------------------------------------------------------------------------------------
# Reading a user's data
# --------------------------------------------------------------------------------------------


def _image_files(root: Path) -> tuple[list[Path], np.ndarray | None, tuple[str, ...] | None]:
    def images_under(folder):
        return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
                      and not any(part.startswith(".") for part in p.relative_to(root).parts))

    top = sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    classes = [(d.name, images_under(d)) for d in sorted(root.iterdir()) if d.is_dir() and not d.name.startswith(".")]
    classes = [(name, files) for name, files in classes if files]
    if not classes:
        if not top:
            raise DataError(f"{root} holds no images (looked for {', '.join(IMAGE_EXTENSIONS)} files, and class "
                            "sub-folders of them).")
        return top, None, None
    if top:
        raise DataError(f"{root} holds class sub-folders ({', '.join(n for n, _ in classes[:5])}) and also images "
                        f"at its top ({top[0].name}); put every image in a class sub-folder, or use no sub-folders.")
    files = [f for _, group in classes for f in group]
    labels = np.concatenate([np.full(len(group), i, np.int64) for i, (_, group) in enumerate(classes)])
    return files, labels, tuple(name for name, _ in classes)


def _decode(files: list[Path]) -> list[np.ndarray]:
    """Decode image files with ``tf.io.decode_image`` in a parallel tf.data pipeline; a file that fails is named."""
    import tensorflow as tf

    def decode(path):
        return tf.io.decode_image(tf.io.read_file(path), channels=0, expand_animations=False)

    ds = tf.data.Dataset.from_tensor_slices([str(f) for f in files]).map(decode, num_parallel_calls=tf.data.AUTOTUNE)
    out: list[np.ndarray] = []
    try:
        for image in ds.as_numpy_iterator():
            out.append(image)
    except tf.errors.OpError:
        for f in files[len(out):]:  # find the file, eagerly: tf.data's error does not name it
            try:
                decode(tf.constant(str(f)))
            except tf.errors.OpError as exc:
                message = re.sub(r"\{\{.*?\}\}|\[Op:.*", "", exc.message).strip()
                raise DataError(f"{f} is not a readable image ({message[:200]}).") from None
        raise
    return out


def _stack(images: list[np.ndarray], files, color_mode, image_size) -> np.ndarray:
    channels = {im.shape[-1] for im in images}
    if color_mode is None:  # as the files are: grey when every one is grey (alpha dropped)
        color_mode = "grayscale" if channels <= {1, 2} else "rgb"
    images = [convert_colors(im[None], color_mode, what=str(f))[0] for im, f in zip(images, files)]
    if image_size is not None:
        images = [resize(im[None], image_size)[0] for im in images]
    else:
        first = images[0].shape[:2]
        for im, f in zip(images, files):
            if im.shape[:2] != first:
                raise DataError(f"The images have different sizes ({files[0]} is {first[0]}x{first[1]}, {f} is "
                                f"{im.shape[0]}x{im.shape[1]}); pass image_size (CLI: --image-size H W) to resize them.")
    return np.stack(images)


def _read_folder(root: Path, color_mode, image_size) -> tuple[np.ndarray, Any, Any]:
    files, labels, class_names = _image_files(root)
    stamp = tuple((str(f), f.stat().st_mtime_ns, f.stat().st_size) for f in files)  # a changed file is read again
    return _decode_folder(stamp, color_mode, image_size), labels, class_names


@functools.lru_cache(maxsize=4)
def _decode_folder(stamp: tuple, color_mode, image_size) -> np.ndarray:
    files = [Path(f) for f, _, _ in stamp]
    images = _stack(_decode(files), files, color_mode, image_size)
    images.flags.writeable = False
    return images


def _read_file(path: Path) -> dict[str, np.ndarray]:
    import zipfile
    import zlib

    try:
        if path.suffix.lower() == ".npy":
            return {"x": np.load(path, allow_pickle=False)}
        with np.load(path, allow_pickle=False) as npz:
            if "x" not in npz.files:
                raise DataError(f"{path} has no array 'x' (it holds {', '.join(npz.files) or 'nothing'}); save the "
                                "images as x (and labels as y): np.savez(path, x=images, y=labels).")
            return {k: npz[k] for k in ("x", "y", "x_test", "y_test") if k in npz.files}
    except (EOFError, OSError, ValueError, zipfile.BadZipFile, zlib.error) as exc:
        if isinstance(exc, DataError):
            raise
        raise DataError(f"{path} is not a readable {path.suffix} file ({type(exc).__name__}: {exc}).") from None


@dataclasses.dataclass
class Arrays:
    """A user's in-memory examples: ``x`` (checked), labels, class names and an optional test part."""

    x: np.ndarray
    y: np.ndarray | None
    class_names: tuple[str, ...] | None
    x_test: np.ndarray | None = None
    y_test: np.ndarray | None = None

    def split(self, split: str, validation_split: float) -> Split:
        if split not in USER_SPLITS:
            raise ValueError(f"Unknown split {split!r} of a user's data; valid choices: {', '.join(USER_SPLITS)}.")
        if split == "test" and self.x_test is not None:
            return Split(self.x_test, self.y_test, self.class_names)
        if split == "all":
            return Split(self.x, self.y, self.class_names)
        index = partition(len(self.x), validation_split)[0 if split == "train" else 1]
        return Split(self.x[index], None if self.y is None else self.y[index], self.class_names)


def partition(n: int, validation_split: float) -> tuple[np.ndarray, np.ndarray]:
    """The train and validation indices (each sorted) of ``n`` examples: a fixed random ``validation_split``
    of them (at least one when ``n > 1``) for validation, drawn with :data:`SPLIT_SEED`."""
    if isinstance(validation_split, bool) or not isinstance(validation_split, (int, float)) or not 0 < validation_split < 1:
        raise ValueError(f"validation_split must be a fraction in (0, 1), got {validation_split!r}.")
    if n < 2:
        raise DataError(f"A user's data needs at least 2 examples to split into train and validation, got {n}.")
    count = min(n - 1, max(1, int(round(validation_split * n))))
    order = np.random.default_rng(SPLIT_SEED).permutation(n)
    return np.sort(order[count:]), np.sort(order[:count])


def arrays_from(value, color_mode=None, image_size=None, what: str = "x") -> Arrays:
    """A user's arrays (an array, ``(x, y)``, or a mapping with ``x``/``y``/``x_test``/``y_test``) checked."""
    if isinstance(value, dict):
        if "x" not in value:
            raise DataError(f"The mapping of arrays has no 'x' (keys: {', '.join(map(str, value)) or 'none'}).")
        parts = value
    elif isinstance(value, tuple):
        if len(value) != 2:
            raise DataError(f"Give images as an array or a pair (x, y), got a tuple of {len(value)} items.")
        parts = {"x": value[0], "y": value[1]}
    else:
        parts = {"x": value}

    def images(key):
        x = check_images(parts[key], what=what if key == "x" else what[:-1] + key)
        x = convert_colors(x, color_mode, what=what)
        return resize(x, image_size) if image_size is not None else x

    x = images("x")
    y, names = (None, None) if parts.get("y") is None else check_labels(parts["y"], len(x), what=what[:-1] + "y")
    x_test = images("x_test") if parts.get("x_test") is not None else None
    y_test = None
    if x_test is not None and x_test.shape[1:] != x.shape[1:]:
        raise DataError(f"{what[:-1]}x_test has images of shape {x_test.shape[1:]}, x of {x.shape[1:]}.")
    if parts.get("y_test") is not None:
        if x_test is None:
            raise DataError(f"{what[:-1]}y_test is given without x_test.")
        y_test, test_names = check_labels(parts["y_test"], len(x_test), what=what[:-1] + "y_test")
        if names is not None or test_names is not None:  # string labels: one set of names for both parts
            every = tuple(sorted(set(names or ()) | set(test_names or ())))
            remap = {n: i for i, n in enumerate(every)}
            y = np.array([remap[names[i]] for i in y]) if names else y
            y_test = np.array([remap[test_names[i]] for i in y_test]) if test_names else y_test
            names = every
    return Arrays(x, y, names, x_test, y_test)


def read_source(source, data_dir=None, color_mode=None, image_size=None):
    """What ``source`` is: ``("registered", reader)``, ``("tfds", name)``, ``("arrays", Arrays)`` or
    ``("stream", tf.data.Dataset)``. Folders and files are read here (decoded once and cached).

    Raises:
        ValueError: an unknown name (close names and the valid choices listed).
        DataError: a missing path, an empty folder, an unreadable file, malformed arrays.
    """
    import tensorflow as tf

    if color_mode not in (None, *COLOR_MODES):
        raise ValueError(f"Unknown color_mode {color_mode!r}; valid choices: {', '.join(COLOR_MODES)} (or None).")
    if image_size is not None:
        image_size = _image_size(image_size)
    if isinstance(source, tf.data.Dataset):
        return "stream", source
    if isinstance(source, os.PathLike):
        source = os.fspath(source)
    if isinstance(source, str):
        if source.startswith("tfds:"):
            if len(source) == 5:
                raise ValueError("tfds: needs a data set name, e.g. tfds:fashion_mnist.")
            return "tfds", source[5:]
        if source in dataset_names():
            return "registered", DATASETS[source]
        if not looks_like_path(source):
            close = difflib.get_close_matches(source, dataset_names(), n=3, cutoff=0.5)
            hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise ValueError(f"Unknown dataset {source!r}.{hint} Valid choices: {describe_choices()}.")
        path = Path(source).expanduser()
        if path.is_dir():
            x, y, names = _read_folder(path.resolve(), color_mode, image_size)
            return "arrays", Arrays(x, y, names)
        if not path.exists():
            raise DataError(f"No such file or folder: {source!r} (a data source is {describe_choices()}).")
        if path.suffix.lower() not in (".npz", ".npy"):
            raise DataError(f"{source!r} is neither a folder of images nor an .npz/.npy file.")
        return "arrays", arrays_from(_read_file(path), color_mode, image_size, what=f"{path}: x")
    if isinstance(source, (np.ndarray, tuple, dict)) or hasattr(source, "__array__"):
        return "arrays", arrays_from(source if isinstance(source, (tuple, dict)) else np.asarray(source),
                                     color_mode, image_size, what="x")
    raise TypeError(f"A data source is {describe_choices()}, an array, (x, y) or a tf.data.Dataset; got "
                    f"{type(source).__name__}.")
