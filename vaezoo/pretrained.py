"""Pretrained weights shipped inside the package: ``vaezoo.get(name, pretrained=True)``.

Each shipped model is one ``<name>.<tag>.weights.h5`` file in ``vaezoo/weights/`` and one entry of
``vaezoo/weights/manifest.json`` (timm's ``architecture.tag`` keys, keras-hub's "config + weights"
presets): the model's full config, the data it was trained on, the schedule and epochs, the test
metric measured after training (with the data it was measured on, so anyone can measure it again,
see :func:`vaezoo.zoo.measure`), the command that trained it and the sha256 of the weights, checked on every
load. Nothing is downloaded.

Example:

>>> import vaezoo
>>> vaezoo.list_pretrained()                      # doctest: +SKIP
['beta_vae_conv.sprites', 'vae.mnist_dynamic', ...]
>>> model = vaezoo.get("vae", pretrained=True)    # the default tag of "vae"
>>> model = vaezoo.get("vae.mnist_dynamic", pretrained=True)   # a tag, timm style
>>> vaezoo.pretrained_info("vae.mnist_dynamic").metric        # doctest: +SKIP
{'name': 'test_nll', 'value': ..., 'num_samples': 5000, ...}

``vaezoo.get("vae.mnist_dynamic")`` (no ``pretrained``) builds that tag's architecture with fresh
weights. Set ``VAEZOO_PRETRAINED_DIR`` to a folder with its own ``manifest.json`` to use other
weights (e.g. a team's own zoo) instead of the shipped ones; :mod:`vaezoo.zoo` writes such a folder.

This module reads manifests and loads checked weights; it imports nothing of :mod:`vaezoo.registry`, which
imports it (one direction only, as timm keeps ``_registry`` below ``_pretrained``).
"""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Mapping

from vaezoo import fileio

#: The shipped weights and their manifest, inside the installed package.
SHIPPED_DIR = Path(__file__).resolve().parent / "weights"
MANIFEST_FILE = "manifest.json"
PRETRAINED_DIR_ENV = "VAEZOO_PRETRAINED_DIR"
MANIFEST_FORMAT = 1


class PretrainedError(ValueError):
    """Weights that cannot be used: missing file, wrong sha256, or weights that do not fit the model."""


@dataclasses.dataclass(frozen=True)
class Pretrained:
    """One entry of the manifest: a registered model name, a tag and how its weights were made.

    Attributes:
        name: the registered model (``vaezoo.get(name)``).
        tag: which weights of that model (``"mnist_dynamic"``); ``key`` is ``name.tag``.
        default: the tag that ``pretrained=True`` picks.
        config: the model's config keys (its full architecture; training keys are in ``schedule``).
        dataset: what it was trained on (human-readable).
        schedule: optimizer, learning rates, batch size, steps per epoch: how it was trained.
        epochs: epochs trained.
        metric: the test metric measured after training: ``name``, ``value``, ``unit`` and the
            measurement's settings (``data``, ``num_samples``, ``examples``, ``seed``), see :func:`vaezoo.zoo.measure`.
        check: the same metric measured cheaply (fewer samples or images), what the default tests repeat.
        file, sha256, bytes: the weights.
        prior: for VQ-VAEs, the key of their trained prior over codes.
        command: how the weights were made.
    """

    name: str
    tag: str
    default: bool
    config: Mapping[str, Any]
    dataset: str
    schedule: Mapping[str, Any]
    epochs: int
    metric: Mapping[str, Any]
    check: Mapping[str, Any]
    file: str
    sha256: str
    bytes: int
    prior: str | None = None
    command: str = ""
    notes: str = ""

    @property
    def key(self) -> str:
        return f"{self.name}.{self.tag}"


def zoo_dir() -> Path:
    """The folder the weights are read from: ``$VAEZOO_PRETRAINED_DIR`` if set, else the shipped one."""
    return Path(os.environ.get(PRETRAINED_DIR_ENV) or SHIPPED_DIR)


def manifest(folder: str | os.PathLike | None = None) -> dict[str, Pretrained]:
    """Every entry of the manifest of ``folder`` (default :func:`zoo_dir`), keyed ``name.tag``."""
    path = Path(folder or zoo_dir()) / MANIFEST_FILE
    if not path.is_file():
        if folder is None and os.environ.get(PRETRAINED_DIR_ENV):
            raise FileNotFoundError(f"${PRETRAINED_DIR_ENV} is {os.environ[PRETRAINED_DIR_ENV]!r}, which has no "
                                    f"{MANIFEST_FILE}.")
        return {}
    try:
        raw = json.loads(path.read_text())
        return {key: Pretrained(**entry) for key, entry in raw["models"].items()}
    except (ValueError, KeyError, TypeError) as exc:
        raise PretrainedError(f"{path} is not a vaezoo weights manifest ({type(exc).__name__}: {exc}).") from None


def list_pretrained(pattern: str = "*") -> list[str]:
    """The ``name.tag`` keys of the available weights matching an fnmatch ``pattern`` (``"vae*"``), sorted."""
    return sorted(k for k in manifest() if fnmatch.fnmatchcase(k, pattern) or fnmatch.fnmatchcase(k.split(".")[0],
                                                                                                    pattern))


def split_name(name: str) -> tuple[str, str | None]:
    """``"vae.mnist_dynamic"`` -> ``("vae", "mnist_dynamic")``; ``"vae"`` -> ``("vae", None)``."""
    base, dot, tag = name.partition(".")
    return base, (tag if dot else None)


def pretrained_info(name: str, tag: str | bool | None = None) -> Pretrained:
    """The manifest entry of ``name.tag`` (``name`` alone or ``tag=True``: that model's default tag).

    Raises:
        KeyError: no weights for the model (the models that have some are listed) or an unknown tag
            (the model's tags are listed).
    """
    base, in_name = split_name(name)
    if in_name is not None and isinstance(tag, str) and tag != in_name:
        raise ValueError(f"Two tags given: {name!r} and pretrained={tag!r}; give one.")
    tag = in_name if in_name is not None else (tag if isinstance(tag, str) else None)
    entries = manifest()
    tags = {e.tag: e for e in entries.values() if e.name == base}
    if not tags:
        with_weights = sorted({e.name for e in entries.values()})
        close = difflib.get_close_matches(base, with_weights, n=3, cutoff=0.6)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise KeyError(f"No pretrained weights for {base!r}.{hint} Models with weights: "
                       f"{', '.join(with_weights) or 'none'} (see `vaezoo list --pretrained`).")
    if tag is None:
        defaults = [e for e in tags.values() if e.default] or sorted(tags.values(), key=lambda e: e.tag)
        return defaults[0]
    if tag not in tags:
        raise KeyError(f"Unknown tag {tag!r} for {base!r}; its pretrained weights: "
                       f"{', '.join(f'{base}.{t}' for t in sorted(tags))}.")
    return tags[tag]


def sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def weights_path(entry: Pretrained, folder: str | os.PathLike | None = None) -> Path:
    """The weights file of ``entry``, after checking that its sha256 is the manifest's.

    Raises:
        PretrainedError: the file is missing or its content is not what the manifest says.
    """
    path = Path(folder or zoo_dir()) / entry.file
    if not path.is_file():
        raise PretrainedError(f"The weights of {entry.key} are missing: {path} does not exist (reinstall vaezoo).")
    actual = sha256(path)
    if actual != entry.sha256:
        raise PretrainedError(f"The weights of {entry.key} are damaged: {path} has sha256 {actual}, the manifest "
                              f"says {entry.sha256} (reinstall vaezoo).")
    return path


def load_weights(model, entry: Pretrained, folder: str | os.PathLike | None = None) -> None:
    """Load ``entry``'s checked weights into ``model`` (built by ``vaezoo.get``), from ``folder`` (default the zoo).

    Raises:
        PretrainedError: damaged file, or weights that do not fit (e.g. an override changed a layer's size).
    """
    path = weights_path(entry, folder)
    try:
        model.load_weights(path)
    except (ValueError, KeyError) as exc:
        raise PretrainedError(f"The weights of {entry.key} do not fit this {type(model).__name__} (built with "
                              f"another architecture than {dict(entry.config)}?): {str(exc)[:300]}") from None


def write_manifest(folder: Path, entries: Mapping[str, Mapping[str, Any]]) -> None:
    fileio.atomic_write_text(folder / MANIFEST_FILE, json.dumps(
        {"format": MANIFEST_FORMAT, "models": dict(sorted(entries.items()))}, indent=1, default=_jsonable) + "\n")


def _jsonable(value):
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"{value!r} is not JSON serializable")
