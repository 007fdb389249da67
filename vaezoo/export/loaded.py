"""Exported models loaded back: SavedModel (TensorFlow) or ``.tflite`` (LiteRT), with checked inputs.

``load_exported(path)`` returns an :class:`ExportedModel` whose signatures are callable by name with
keyword inputs (``exported.sample(n=16)``, ``exported.decode(z=z)``) and return dicts of numpy
arrays. Inputs are checked against the signature first: a missing or unknown input name, a wrong
dtype or a wrong shape raises an error naming the input, what it got and what the signature takes,
instead of a crash inside the runtime or a silent broadcast.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from vaezoo import fileio


def _resolve(path: Path) -> Path:
    """A SavedModel folder, a TF Serving model folder (-> its newest version) or a .tflite file."""
    if path.is_file() and path.suffix == ".tflite":
        return path
    fileio.recover(path)  # a version folder whose replacement a kill interrupted
    fileio.recover_folder(path)  # or one of a TF Serving model folder's versions
    if (path / "saved_model.pb").is_file():
        return path
    versions = sorted((int(p.name), p) for p in path.iterdir() if p.name.isdigit()) if path.is_dir() else []
    if versions and (versions[-1][1] / "saved_model.pb").is_file():
        return versions[-1][1]
    raise FileNotFoundError(
        f"No exported model at {str(path)!r}: expected a .tflite file, a SavedModel folder (with saved_model.pb) "
        f"or a TF Serving model folder with integer version folders."
    )


class ExportedModel:
    """An exported vaezoo model, called by signature: ``exported("decode", z=z)`` or ``exported.decode(z=z)``.

    Attributes:
        path: the SavedModel folder or ``.tflite`` file loaded.
        format: ``"saved_model"`` or ``"tflite"``.
        signatures: ``{signature: {input: (shape, dtype)}}``; ``None`` marks a free (batch) dimension.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = _resolve(Path(path))
        if self.path.suffix == ".tflite":
            from ai_edge_litert.interpreter import Interpreter

            self.format = "tflite"
            self._interpreter = Interpreter(model_path=os.fspath(self.path))
            # One runner per signature, made once: calls reuse it.
            self._runners = {name: self._interpreter.get_signature_runner(name)
                             for name in self._interpreter.get_signature_list()}
            self.signatures = {}
            for name, runner in self._runners.items():
                details = runner.get_input_details()
                self.signatures[name] = {
                    k: (tuple(None if d < 0 else int(d) for d in v["shape_signature"]), np.dtype(v["dtype"]).name)
                    for k, v in details.items()
                }
        else:
            import tensorflow as tf

            self.format = "saved_model"
            self._loaded = tf.saved_model.load(os.fspath(self.path))
            self.signatures = {
                name: {k: (tuple(spec.shape.as_list()), spec.dtype.name)
                       for k, spec in fn.structured_input_signature[1].items()}
                for name, fn in self._loaded.signatures.items()
            }

    def check_inputs(self, signature: str, inputs: dict) -> dict[str, np.ndarray]:
        """``inputs`` as numpy arrays of the signature's dtypes, or an error naming what is wrong."""
        if signature not in self.signatures:
            raise KeyError(f"Unknown signature {signature!r}; this model has: {', '.join(sorted(self.signatures))}.")
        expected = self.signatures[signature]
        if set(inputs) != set(expected):
            raise ValueError(
                f"Signature {signature!r} takes inputs {sorted(expected)}, got {sorted(inputs)}."
            )
        out = {}
        for key, value in inputs.items():
            shape, dtype = expected[key]
            if hasattr(value, "dtype"):  # arrays and tensors keep their dtype: no silent casts
                value = np.asarray(value)
                if value.dtype != np.dtype(dtype):
                    raise TypeError(f"Input {key!r} of signature {signature!r} must be {dtype}, got {value.dtype}.")
            else:  # Python numbers and lists take the signature's dtype
                value = np.asarray(value, dtype=dtype)
            if value.ndim != len(shape) or any(d is not None and d != v for d, v in zip(shape, value.shape)):
                want = "(" + ", ".join("None" if d is None else str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"
                raise ValueError(
                    f"Input {key!r} of signature {signature!r} must have shape {want} (None: any size), "
                    f"got {value.shape}."
                )
            out[key] = value
        return out

    def __call__(self, signature: str, **inputs) -> dict[str, np.ndarray]:
        """Run ``signature`` on keyword ``inputs``; a dict of numpy arrays."""
        inputs = self.check_inputs(signature, inputs)
        if self.format == "tflite":
            return dict(self._runners[signature](**inputs))
        outputs = self._loaded.signatures[signature](**inputs)
        return {k: v.numpy() for k, v in outputs.items()}

    def __getattr__(self, name):
        signatures = self.__dict__.get("signatures", {})
        if name in signatures:
            return lambda **inputs: self(name, **inputs)
        raise AttributeError(f"{type(self).__name__} has no attribute or signature {name!r}; signatures: "
                             f"{', '.join(sorted(signatures))}.")

    def __repr__(self):
        return f"ExportedModel({str(self.path)!r}, format={self.format!r}, signatures={sorted(self.signatures)})"


def load_exported(path: str | os.PathLike) -> ExportedModel:
    """Load an exported model: a ``.tflite`` file, a SavedModel folder, or a TF Serving model folder
    (``savedmodels/<name>``, whose newest version is loaded)."""
    return ExportedModel(path)
