"""TFLite (LiteRT) models with one signature per exported endpoint, builtin ops only.

Converted from the SavedModel that :mod:`vaezoo.export.savedmodel` writes (converting concrete
functions directly can silently write an empty model), with ``TFLITE_BUILTINS`` only, so the model
runs on the plain LiteRT runtime without the Flex delegate. Optional post-training quantisation:
``"float16"`` (weights stored as float16, about half the size) or ``"dynamic_range"`` (weights as
int8, activations quantised on the fly, about a quarter).

Reference: https://ai.google.dev/edge/litert/models/post_training_quantization
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Iterable

import tensorflow as tf

from vaezoo import config as _config
from vaezoo import fileio

from vaezoo.export.savedmodel import build_archive, select_endpoints

#: Signatures written by default: what a phone app needs to encode, decode and generate.
DEFAULT_SIGNATURES = ("encode", "decode", "sample_from_noise")
QUANTIZATIONS = _config.QUANTIZATIONS


def _check_quantize(quantize) -> None:
    if quantize not in QUANTIZATIONS:
        raise ValueError(f"Unknown quantize {quantize!r}; valid choices: {', '.join(map(str, QUANTIZATIONS))}.")


def default_signatures(model, prior=None) -> list[str]:
    """The names of :data:`DEFAULT_SIGNATURES` that ``model`` exports."""
    available = select_endpoints(model, prior=prior)
    return [name for name in DEFAULT_SIGNATURES if name in available]


def convert_saved_model(saved_model_dir: str | os.PathLike, signatures: Iterable[str],
                        quantize: str | None = None) -> bytes:
    """TFLite flatbuffer of ``signatures`` of a SavedModel, builtin ops only, optionally quantised."""
    _check_quantize(quantize)
    converter = tf.lite.TFLiteConverter.from_saved_model(os.fspath(saved_model_dir), signature_keys=list(signatures))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quantize is not None:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantize == "float16":
        converter.target_spec.supported_types = [tf.float16]
    return converter.convert()


def tflite(model, path: str | os.PathLike, signatures: Iterable[str] = DEFAULT_SIGNATURES,
           quantize: str | None = None, prior=None, overwrite: bool = False) -> Path:
    """Convert ``model`` to a ``.tflite`` file with one signature per name in ``signatures``.

    Args:
        model: a built vaezoo model.
        path: the ``.tflite`` file to write (folders are created).
        signatures: endpoints of the model (see :meth:`vaezoo.BaseVAE.endpoints`); by default
            those of :data:`DEFAULT_SIGNATURES` the model has (a prior over codes has only
            ``sample_from_noise``).
        quantize: None (float32), ``"float16"`` or ``"dynamic_range"``.
        prior: a VQ-VAE's trained prior over codes, used by ``sample`` and ``sample_from_noise``.
        overwrite: replace an existing file (otherwise that raises ``FileExistsError``).

    Returns:
        The path written.
    """
    _check_quantize(quantize)
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True (CLI: --overwrite) to replace it, or another path.")
    signatures = default_signatures(model, prior) if signatures is DEFAULT_SIGNATURES else list(signatures)
    excluded = {s: why for s, why in getattr(model, "saved_model_only_signatures", {}).items() if s in signatures}
    if excluded:
        name, why = next(iter(excluded.items()))
        raise ValueError(f"The {name!r} signature of {model.name} has no TFLite builtin form ({why}); it is in the "
                         f"SavedModel only. TFLite signatures of this model: "
                         f"{', '.join(s for s in select_endpoints(model, prior=prior) if s not in excluded)}.")
    archive = build_archive(model, signatures, prior)
    with tempfile.TemporaryDirectory() as tmp:
        archive.write_out(tmp, verbose=False)
        flatbuffer = convert_saved_model(tmp, signatures, quantize)
    return fileio.atomic_write_bytes(path, flatbuffer)
