"""Export: SavedModels for TF Serving (checked in a process without vaezoo or TFP), TFLite via LiteRT."""

import contextlib
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

import vaezoo
from vaezoo import cli
from vaezoo.export import savedmodel as sm

from conftest import batch_for, images_of, tiny

MODELS = vaezoo.list_models()
BATCH = 3
#: Signatures whose outputs are random draws (compared by shape and range, not value).
RANDOM = {"sample"}


def _prior_for(vq):
    return vaezoo.get(vq.prior_name, **vq.prior_config(), channels=8, num_blocks=2, seed=0)


def _model(name):
    keras.utils.set_random_seed(0)
    model = tiny(name, seed=0)
    return model, (_prior_for(model) if hasattr(model, "prior_name") else None)


def _inputs(model, specs: dict, seed: int = 0) -> dict:
    """Valid inputs for a signature: images from sprites, codes in range, uniform noise, a seed, n."""
    rng = np.random.default_rng(seed)
    out = {}
    for key, spec in specs.items():
        shape = [BATCH if d is None else d for d in spec.shape]
        if key == "images":
            out[key] = np.asarray(images_of(batch_for(model, n=BATCH)), "float32")
        elif key == "labels":
            out[key] = np.asarray(batch_for(model, n=BATCH)["labels"], "int32")
        elif key == "n":
            out[key] = np.int32(BATCH)
        elif key == "seed":
            out[key] = np.array([3, 4], "int32")
        elif spec.dtype == tf.int32:
            out[key] = rng.integers(0, model.num_codes, shape).astype("int32")
        elif "noise" in key:
            out[key] = rng.uniform(0, 1, shape).astype("float32")
        else:
            out[key] = rng.normal(size=shape).astype("float32")
    return out


def _reference(model, prior, signatures=None):
    """Inputs and the Keras model's outputs (eager) for every deterministic signature."""
    endpoints = sm.select_endpoints(model, signatures, prior)
    refs = {}
    for name, (fn, specs) in endpoints.items():
        inputs = _inputs(model, specs)
        outputs = {} if name in RANDOM else {k: np.asarray(v) for k, v in fn(**inputs).items()}
        refs[name] = (inputs, outputs)
    return refs


def _assert_close(exported: dict, expected: dict, atol=1e-5, where=""):
    assert set(exported) == set(expected), where
    for key, value in expected.items():
        got = np.asarray(exported[key])
        assert got.shape == value.shape and got.dtype == value.dtype, (where, key, got.shape, value.shape)
        # atol for values near 0; rtol 1e-6 (about 8 float32 ulps) for bounds of hundreds of nats, whose last
        # bit depends on the order of a sum over many samples.
        np.testing.assert_allclose(got, value, rtol=1e-6, atol=atol, err_msg=f"{where} {key}")


def _check_random(model, outputs: dict):
    for key, value in outputs.items():
        value = np.asarray(value)
        assert value.shape[0] == BATCH and np.all(np.isfinite(value)), key
        if key.endswith("codes"):
            assert value.min() >= 0 and value.max() < model.num_codes
        if key == "images":
            assert value.min() >= 0 and value.max() <= 1


# ---- SavedModel ------------------------------------------------------------------------------

_CHILD = r'''
import json, sys
import numpy as np
import tensorflow as tf
results = {}
for job in json.loads(sys.argv[1]):
    loaded = tf.saved_model.load(job["path"])
    inputs = np.load(job["inputs"])
    names = sorted({k.split("/")[0] for k in inputs.files})
    assert sorted(loaded.signatures.keys()) == sorted(job["signatures"]), (list(loaded.signatures.keys()), job)
    outputs = {}
    for name in job["signatures"]:
        fn = loaded.signatures[name]
        args = {k.split("/")[1]: tf.constant(inputs[k]) for k in inputs.files if k.split("/")[0] == name}
        for key, value in fn(**args).items():
            outputs[f"{name}/{key}"] = value.numpy()
    np.savez(job["outputs"], **outputs)
print(json.dumps({"vaezoo": "vaezoo" in sys.modules, "tfp": "tensorflow_probability" in sys.modules}))
'''


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Every registered model (VQ-VAEs with a prior), exported, run in one fresh process."""
    root = tmp_path_factory.mktemp("savedmodels")
    jobs, refs = [], {}
    for name in MODELS:
        model, prior = _model(name)
        path = vaezoo.export.saved_model(model, root, prior=prior)
        refs[name] = (model, prior, path, _reference(model, prior))
        inputs = {f"{sig}/{k}": v for sig, (ins, _) in refs[name][3].items() for k, v in ins.items()}
        np.savez(root / f"{name}_in.npz", **inputs)
        jobs.append({"path": str(path), "inputs": str(root / f"{name}_in.npz"),
                     "outputs": str(root / f"{name}_out.npz"), "signatures": list(refs[name][3])})
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(jobs)], capture_output=True, text=True,
                          env=env, cwd=root, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    imported = json.loads(done.stdout.strip().splitlines()[-1])
    return refs, imported, root


def test_the_serving_process_imports_neither_vaezoo_nor_tfp(exported):
    _, imported, _ = exported
    assert imported == {"vaezoo": False, "tfp": False}


@pytest.mark.parametrize("name", MODELS)
def test_saved_model_signatures_match_the_keras_model(name, exported):
    refs, _, root = exported
    model, prior, path, expected = refs[name]
    assert path == root / name / "1" and (path / "saved_model.pb").is_file()  # TF Serving layout
    assert list(expected)[0] == "serving_default"
    if isinstance(model, vaezoo.VAE):
        extra = {"sample_weights"} if isinstance(model, vaezoo.BayesianVAE) else set()  # a seed: reproducible
        extra |= {"classify"} if isinstance(model, vaezoo.models.M2) else set()  # q(y|x) of the semi-supervised M2
        assert set(expected) == {"serving_default", "encode", "decode", "sample", "sample_from_noise", "elbo", *extra}
    outputs = np.load(root / f"{name}_out.npz")
    for sig, (inputs, want) in expected.items():
        got = {k.split("/")[1]: outputs[k] for k in outputs.files if k.split("/")[0] == sig}
        if sig in RANDOM:
            _check_random(model, got)
        else:
            _assert_close(got, want, where=f"{name}:{sig}")


@pytest.mark.parametrize("name", ["vae", "iwae", "vq_vae", "vq_vae2"])
def test_endpoints_compute_the_public_api(name, exported):
    """What a signature returns is what the model's Python API returns."""
    refs, _, _ = exported
    model, prior, _, expected = refs[name]
    x = expected["serving_default"][0]["images"]
    np.testing.assert_allclose(expected["serving_default"][1]["reconstruction"], model.reconstruct(x), atol=1e-6)
    if isinstance(model, vaezoo.VAE):
        mean, log_var = model.encode(x)
        np.testing.assert_allclose(expected["encode"][1]["mean"], mean, atol=1e-6)
        np.testing.assert_allclose(expected["encode"][1]["log_variance"], log_var, atol=1e-6)
        z = expected["decode"][0]["z"]
        np.testing.assert_allclose(expected["decode"][1]["images"], model.decode(z), atol=1e-6)
        inputs, out = expected["elbo"]
        bound = "iwae_bound" if name == "iwae" else "elbo"
        np.testing.assert_allclose(out[bound], model.compute_terms(x, seed=tf.constant(inputs["seed"]))[bound], atol=1e-4)
        noise = expected["sample_from_noise"][0]
        np.testing.assert_allclose(expected["sample_from_noise"][1]["images"], model.sample_from_noise(**noise), atol=1e-6)
    else:
        encoded = model.encode(x)
        encoded = encoded if isinstance(encoded, tuple) else (encoded,)
        for got, want in zip(expected["encode"][1].values(), encoded):
            np.testing.assert_array_equal(got, want)
        noise, out = expected["sample_from_noise"]
        drawn = prior.sample_from_noise(*noise.values())  # the prior's own draws from the same noise
        drawn = drawn if isinstance(drawn, dict) else {"codes": drawn}
        for got, want in zip([v for k, v in out.items() if k.endswith("codes")], drawn.values()):
            np.testing.assert_array_equal(got, want)


def test_saved_model_cli_show_and_run(exported, tmp_path):
    refs, _, _ = exported
    model, _, path, expected = refs["vae"]
    cli_bin = Path(sys.executable).with_name("saved_model_cli")
    show = subprocess.run([str(cli_bin), "show", "--dir", str(path), "--all"], capture_output=True, text=True,
                          timeout=300)
    assert show.returncode == 0, show.stderr[-2000:]
    for sig in ("serving_default", "encode", "decode", "sample", "sample_from_noise", "elbo"):
        assert f"signature_def['{sig}']" in show.stdout
    assert "outputs['reconstruction']" in show.stdout and "inputs['images']" in show.stdout
    x = expected["serving_default"][0]["images"]
    np.save(tmp_path / "x.npy", x)
    run = subprocess.run([str(cli_bin), "run", "--dir", str(path), "--tag_set", "serve", "--signature_def",
                          "serving_default", "--inputs", f"images={tmp_path / 'x.npy'}", "--outdir", str(tmp_path / "out")],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    np.testing.assert_allclose(np.load(tmp_path / "out" / "reconstruction.npy"), model.reconstruct(x), atol=1e-5)


def test_predict_request_for_tf_serving(exported):
    predict_pb2 = pytest.importorskip("tensorflow_serving.apis.predict_pb2")
    refs, _, _ = exported
    _, _, path, expected = refs["vae"]
    x = expected["serving_default"][0]["images"]
    request = vaezoo.export.predict_request(path, images=x)
    assert isinstance(request, predict_pb2.PredictRequest)
    assert request.model_spec.name == "vae" and request.model_spec.signature_name == "serving_default"
    assert list(request.inputs) == ["images"]
    np.testing.assert_array_equal(tf.make_ndarray(request.inputs["images"]), x)
    decode = vaezoo.export.predict_request(path.parent, "decode", version=1, z=np.zeros((2, 4), "float32"))
    assert decode.model_spec.version.value == 1 and list(decode.inputs) == ["z"]
    with pytest.raises(ValueError, match=r"takes inputs \['z'\], got \['x'\]"):
        vaezoo.export.predict_request(path, "decode", x=np.zeros((2, 4), "float32"))


def test_versions_and_loading_the_newest(tmp_path):
    model, _ = _model("vae")
    first = vaezoo.export.saved_model(model, tmp_path, signatures=["serving_default", "decode"])
    second = vaezoo.export.saved_model(model, tmp_path, signatures=["serving_default", "decode"])
    assert (first.name, second.name) == ("1", "2")
    assert vaezoo.load_exported(tmp_path / "vae").path == second
    with pytest.raises(FileExistsError, match="exists"):
        vaezoo.export.saved_model(model, tmp_path, version=2)
    with pytest.raises(ValueError, match="positive integer"):
        vaezoo.export.saved_model(model, tmp_path, version=0)
    with pytest.raises(ValueError, match=r"Unknown signature\(s\) \['encoder'\].*valid choices: serving_default, encode"):
        vaezoo.export.saved_model(model, tmp_path, signatures=["encoder"])
    with pytest.raises(FileNotFoundError, match="No exported model"):
        vaezoo.load_exported(tmp_path / "nothing")


# ---- TFLite ----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", MODELS)
def test_tflite_signatures_match_the_keras_model(name, tmp_path):
    model, prior = _model(name)
    path = vaezoo.export.tflite(model, tmp_path / f"{name}.tflite", prior=prior)  # the default signatures
    signatures = ["sample_from_noise"] if model.input_kind == "codes" else ["encode", "decode", "sample_from_noise"]
    lite = vaezoo.load_exported(path)
    assert lite.format == "tflite" and sorted(lite.signatures) == sorted(signatures)
    for sig, (inputs, expected) in _reference(model, prior, signatures).items():
        _assert_close(lite(sig, **inputs), expected, where=f"{name}:{sig}")


def test_tflite_has_builtin_ops_only(tmp_path):
    model, prior = _model("vq_vae")
    path = vaezoo.export.tflite(model, tmp_path / "vq.tflite", prior=prior)
    report = io.StringIO()
    with contextlib.redirect_stdout(report):  # the Analyzer prints its report
        tf.lite.experimental.Analyzer.analyze(model_path=str(path))
    ops = set(re.findall(r"Op#\d+ (\w+)", report.getvalue()))
    assert {"WHILE", "ARG_MIN", "CONV_2D", "GATHER"} <= ops, ops  # the prior's loop, the quantiser, the networks
    assert not any(op.startswith("Flex") or op == "CUSTOM" for op in ops), ops


@pytest.mark.parametrize("quantize,max_ratio", [("float16", 0.6), ("dynamic_range", 0.35)])
def test_quantized_tflite_is_smaller_and_close(quantize, max_ratio, tmp_path):
    model = tiny("vae", hidden_units=[128], latent_dim=8, seed=0)  # weights dominate the file size
    full = vaezoo.export.tflite(model, tmp_path / "f32.tflite")
    small = vaezoo.export.tflite(model, tmp_path / f"{quantize}.tflite", quantize=quantize)
    ratio = small.stat().st_size / full.stat().st_size
    assert ratio < max_ratio, ratio
    lite = vaezoo.load_exported(small)
    for sig, (inputs, expected) in _reference(model, None, vaezoo.export.DEFAULT_SIGNATURES).items():
        for key, value in lite(sig, **inputs).items():
            err = np.max(np.abs(value - expected[key]))
            assert 0 <= err < 0.05, (sig, key, err)  # quantisation error, small but not zero-tolerance


def test_exported_models_reject_bad_inputs(exported, tmp_path):
    refs, _, _ = exported
    model, _, path, _ = refs["vae"]
    lite = vaezoo.load_exported(vaezoo.export.tflite(model, tmp_path / "vae.tflite"))
    for m in (vaezoo.load_exported(path), lite):
        with pytest.raises(ValueError, match=r"'z' of signature 'decode' must have shape \(None, 4\).*got \(2, 5\)"):
            m.decode(z=np.zeros((2, 5), "float32"))
        with pytest.raises(ValueError, match=r"must have shape \(None, 4\).*got \(4,\)"):
            m.decode(z=np.zeros(4, "float32"))  # no silent broadcast of a missing batch axis
        with pytest.raises(TypeError, match="'z' of signature 'decode' must be float32, got float64"):
            m.decode(z=np.zeros((2, 4)))
        with pytest.raises(ValueError, match=r"takes inputs \['z'\], got \['latent'\]"):
            m.decode(latent=np.zeros((2, 4), "float32"))
        with pytest.raises(KeyError, match="Unknown signature 'decoder'"):
            m("decoder", z=np.zeros((2, 4), "float32"))
        assert m.decode(z=[[0.0] * 4])["images"].shape == (1, 28, 28, 1)  # lists take the signature's dtype
    with pytest.raises(ValueError, match="Unknown quantize 'int4'; valid choices: None, float16, dynamic_range"):
        vaezoo.export.tflite(model, tmp_path / "x.tflite", quantize="int4")
    raw = tf.saved_model.load(str(path)).signatures["decode"]
    with pytest.raises((TypeError, ValueError, tf.errors.InvalidArgumentError)):
        raw(z=tf.zeros((2, 5)))  # TF itself also refuses a wrong shape at the signature


# ---- CLI -------------------------------------------------------------------------------------

def test_cli_exports_saved_model_and_tflite(tmp_path, capsys):
    model, prior = _model("vq_vae")
    model.save(tmp_path / "vq.keras")
    prior.save(tmp_path / "prior.keras")
    out = tmp_path / "savedmodels"
    assert cli.main(["export", "vq_vae", "--checkpoint", str(tmp_path / "vq.keras"), "--prior",
                     str(tmp_path / "prior.keras"), "--format", "saved_model", "--out", str(out)]) == 0
    assert cli.main(["export", "vq_vae", "--checkpoint", str(tmp_path / "vq.keras"), "--prior",
                     str(tmp_path / "prior.keras"), "--format", "tflite", "--quantize", "float16",
                     "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert str(out / "vq_vae" / "1") in printed and "vq_vae.float16.tflite" in printed
    for path in (out / "vq_vae", out / "vq_vae" / "vq_vae.float16.tflite"):
        drawn = vaezoo.load_exported(path).sample_from_noise(noise=np.full((2, 7, 7), 0.5, "float32"))
        assert drawn["images"].shape == (2, 28, 28, 1)
    with pytest.raises(SystemExit):  # argparse: invalid choice 'onnx' (choose from saved_model, tflite)
        cli.main(["export", "vq_vae", "--checkpoint", str(tmp_path / "vq.keras"), "--format", "onnx"])
    assert "invalid choice: 'onnx'" in capsys.readouterr().err
    assert cli.main(["export", "vae", "--checkpoint", str(tmp_path / "vq.keras"), "--out", str(out),
                     "--format", "saved_model"]) == 2
    assert "holds a 'vq_vae' model, not 'vae'" in capsys.readouterr().err
