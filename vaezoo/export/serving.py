"""Requests for TF Serving: a gRPC ``PredictRequest`` built from an exported signature's inputs.

Needs the optional ``tensorflow-serving-api`` package (``pip install "vaezoo[serving]"``); no model
server runs here. Send the request with ``prediction_service_pb2_grpc.PredictionServiceStub(channel)
.Predict(request)`` against ``tensorflow/serving`` (see the README for the docker command and the
REST equivalent).
"""

from __future__ import annotations

import os
from pathlib import Path

from vaezoo.export.loaded import ExportedModel


def predict_request(path: str | os.PathLike, signature: str = "serving_default", *, model_name: str | None = None,
                    version: int | None = None, **inputs):
    """A ``tensorflow_serving.apis.predict_pb2.PredictRequest`` for ``signature`` of the SavedModel at ``path``.

    The inputs are checked against the signature (names, dtypes, shapes) and keyed by the
    signature's input names. ``model_name`` defaults to the TF Serving model folder's name
    (``savedmodels/<name>/<version>``); ``version`` pins ``model_spec.version`` (default: the server's
    newest).
    """
    try:
        import tensorflow as tf
        from tensorflow_serving.apis import predict_pb2
    except ImportError as exc:  # pragma: no cover - depends on the optional extra
        raise ImportError('predict_request needs tensorflow-serving-api: pip install "vaezoo[serving]"') from exc
    exported = ExportedModel(path)
    if exported.format != "saved_model":
        raise ValueError(f"TF Serving serves SavedModels; {exported.path} is a {exported.format} model.")
    checked = exported.check_inputs(signature, inputs)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name or Path(exported.path).resolve().parent.name
    request.model_spec.signature_name = signature
    if version is not None:
        request.model_spec.version.value = int(version)
    for key, value in checked.items():
        request.inputs[key].CopyFrom(tf.make_tensor_proto(value))
    return request
