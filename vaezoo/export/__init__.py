"""Export vaezoo models for serving: SavedModels for TF Serving, TFLite models for phones.

Each model family declares its serving signatures once (:meth:`vaezoo.BaseVAE.endpoints`); every
format writes those: a SavedModel through ``keras.export.ExportArchive``
(:mod:`vaezoo.export.savedmodel`), TFLite from that SavedModel with builtin ops only
(:mod:`vaezoo.export.litert`). :func:`load_exported` loads either back and checks inputs by name,
dtype and shape (:mod:`vaezoo.export.loaded`); :func:`predict_request` builds a TF Serving gRPC
request (:mod:`vaezoo.export.serving`).

Example:

>>> path = vaezoo.export.saved_model(model, "savedmodels")        # savedmodels/vae/1
>>> vaezoo.export.tflite(model, "savedmodels/vae/vae.tflite", quantize="float16")
>>> exported = vaezoo.load_exported("savedmodels/vae")             # the newest version
>>> exported.sample(n=16)["images"].shape
(16, 28, 28, 1)
"""

from vaezoo.export.loaded import ExportedModel, load_exported
from vaezoo.export.savedmodel import build_archive, saved_model
from vaezoo.export.serving import predict_request
from vaezoo.export.litert import DEFAULT_SIGNATURES, QUANTIZATIONS, tflite

__all__ = ["DEFAULT_SIGNATURES", "ExportedModel", "QUANTIZATIONS", "build_archive", "load_exported",
           "predict_request", "saved_model", "tflite"]
