"""SavedModels in the TF Serving layout, written with ``keras.export.ExportArchive``.

``saved_model(model, "savedmodels")`` writes ``savedmodels/<model name>/<version>/`` with one named
signature per endpoint of the model (:meth:`vaezoo.BaseVAE.endpoints`), each with an explicit input
signature and a dict of named tensors as output. The graph holds TensorFlow ops only: a serving
host needs neither vaezoo nor TensorFlow Probability.
"""

from __future__ import annotations

import inspect
import os
from pathlib import Path
from typing import Iterable

import keras
import tensorflow as tf

from vaezoo import fileio


def _endpoints(model, prior=None) -> dict:
    return model.endpoints(prior=prior) if prior is not None else model.endpoints()


def select_endpoints(model, signatures: Iterable[str] | None = None, prior=None) -> dict:
    """The model's endpoints, or those named in ``signatures`` (unknown names raise, listing the valid ones)."""
    if prior is not None and "prior" not in inspect.signature(model.endpoints).parameters:
        raise ValueError(f"{type(model).__name__} takes no prior; only VQ-VAE families export one with the model.")
    endpoints = _endpoints(model, prior)
    if signatures is None:
        return endpoints
    signatures = list(signatures)
    unknown = [s for s in signatures if s not in endpoints]
    if unknown or not signatures:
        raise ValueError(f"Unknown signature(s) {unknown} for {type(model).__name__}; valid choices: "
                         f"{', '.join(endpoints)}.")
    return {name: endpoints[name] for name in signatures}


def _tf_function(fn, inputs: dict[str, tf.TensorSpec]):
    """``fn(**inputs)`` as a traced ``tf.function`` whose signature inputs carry ``inputs``' names."""
    names = list(inputs)

    def endpoint(*args):
        return fn(**dict(zip(names, args)))

    traced = tf.function(endpoint, input_signature=[tf.TensorSpec(s.shape, s.dtype, name=k) for k, s in inputs.items()])
    traced.get_concrete_function()
    return traced


def build_archive(model, signatures: Iterable[str] | None = None, prior=None) -> keras.export.ExportArchive:
    """A ``keras.export.ExportArchive`` with one endpoint per signature of ``model`` (and ``prior``)."""
    endpoints = select_endpoints(model, signatures, prior)
    archive = keras.export.ExportArchive()
    # No archive.track(model): the archive saves the variables its endpoints use by itself, and
    # tracking the model as well would store every weight twice (Keras 3.15).
    for name, (fn, inputs) in endpoints.items():
        archive.add_endpoint(name, _tf_function(fn, inputs))
    return archive


def versions(model_dir: str | os.PathLike) -> list[int]:
    """The integer versions under a TF Serving model folder, ascending (a version whose replacement a kill
    interrupted is put back first: :func:`vaezoo.fileio.recover_folder`)."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        return []
    fileio.recover_folder(model_dir)
    return sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())


def saved_model(model, export_dir: str | os.PathLike, version: int | None = None, *, name: str | None = None,
                signatures: Iterable[str] | None = None, prior=None, overwrite: bool = False) -> Path:
    """Write ``model`` as a SavedModel at ``<export_dir>/<name>/<version>/`` (TF Serving's layout).

    Args:
        model: a built vaezoo model.
        export_dir: the model base folder of TF Serving (e.g. ``savedmodels``).
        version: a positive integer; default one more than the newest version there (1 if none).
        name: the served model's name; default ``model.name`` (the registry name for
            ``vaezoo.get`` models).
        signatures: the endpoints to export (default all of the model's).
        prior: a VQ-VAE's trained prior over codes, exported inside ``sample`` and ``sample_from_noise``.
        overwrite: replace an existing version folder (otherwise that raises ``FileExistsError``).

    Returns:
        The version folder written.
    """
    name = name or model.name
    if version is None:
        version = (versions(Path(export_dir) / name) or [0])[-1] + 1
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValueError(f"version must be a positive integer (TF Serving's version folders), got {version!r}.")
    path = Path(export_dir) / name / str(version)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass another version (existing: {versions(path.parent)}) or "
                              "overwrite=True (CLI: --overwrite).")
    archive = build_archive(model, signatures, prior)
    with fileio.atomic_path(path) as tmp:  # TF Serving never sees a half-written version
        archive.write_out(os.fspath(tmp), verbose=False)
    return path
