"""The pretrained zoo in savedmodels/: complete, intact, and the models it says it holds."""

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest

import vaezoo
from vaezoo import data

ZOO = Path(__file__).resolve().parents[1] / "savedmodels"
sys.path.insert(0, str(ZOO))
import build_zoo  # noqa: E402  (the build's own NLL of reconstructions, so both sides compute it alike)

MANIFEST = json.loads((ZOO / "MANIFEST.json").read_text())["models"]


def test_the_zoo_holds_exactly_the_shipped_pretrained_models():
    # savedmodels/ serves the shipped weights (vaezoo.list_pretrained): every model with weights that
    # generates images is exported here from its default tag, with its shipped prior if it has one;
    # nothing else is.
    entries = vaezoo.pretrained.manifest()
    priors = {e.prior for e in entries.values() if e.prior}
    expected = {e.name: e for e in entries.values() if e.default and e.key not in priors}
    assert expected and set(MANIFEST) == set(expected)
    for name, record in MANIFEST.items():
        entry = expected[name]
        assert record["pretrained"] == entry.key and record["weights_metric"]["value"] == entry.metric["value"]
        assert record.get("prior", {}).get("pretrained") == entry.prior
    on_disk = {p.name for p in ZOO.iterdir() if p.is_dir() and not p.name.startswith(("_", "."))}
    assert on_disk == set(MANIFEST)


@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_files_match_the_manifest(name):
    entry = MANIFEST[name]
    assert entry["files"] and entry["tflite_bytes"] < 5e6 and entry["saved_model_bytes"] < 6e6  # a few MB
    for rel, meta in entry["files"].items():
        blob = (ZOO / rel).read_bytes()
        assert len(blob) == meta["bytes"] and hashlib.sha256(blob).hexdigest() == meta["sha256"], rel


@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_exported_models_generate(name):
    for path in (ZOO / name, ZOO / name / f"{name}.tflite"):
        exported = vaezoo.load_exported(path)
        specs = exported.signatures["sample_from_noise"]
        rng = np.random.default_rng(0)
        # Noise inputs in [0, 1); a conditional model's int32 labels: two classes.
        noise = {k: (np.array([0, 1], dtype) if dtype == "int32" else rng.uniform(size=(2, *shape[1:])).astype(dtype))
                 for k, (shape, dtype) in specs.items()}
        images = exported.sample_from_noise(**noise)["images"]
        assert images.shape == (2, *MANIFEST[name]["data_shape"]) and images.min() >= 0 and images.max() <= 1
        if "labels" in specs:  # the label is an input that matters: other classes, other images
            other = exported.sample_from_noise(**{**noise, "labels": np.array([7, 8], "int32")})["images"]
            assert np.abs(np.asarray(other) - np.asarray(images)).max() > 0.1


def _inputs(batch) -> dict:
    """A test batch as the export's inputs: images, and a conditional model's labels (its bound is of log p(x|y))."""
    if isinstance(batch, tuple):
        return {"images": batch[0].numpy(), "labels": batch[1].numpy()}
    return {"images": batch.numpy()}


@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_exported_models_score_what_the_manifest_says(name, request):
    """Re-evaluate each SavedModel on the test set of its build: it holds the shipped weights."""
    entry = MANIFEST[name]
    spec = dict(entry["data"])
    data_dir = request.getfixturevalue("data_dir") if spec["name"] != "sprites" else None
    exported = vaezoo.load_exported(ZOO / name)
    test = data.load(spec.pop("name"), spec.pop("split"), data_dir=data_dir, shuffle=False, **spec)
    bound = entry["bound"]
    if "elbo" in exported.signatures:  # continuous latents: the bound, one draw per image, at the build's seeds
        values = [exported.elbo(**_inputs(batch), seed=np.array([0, i], "int32"))[bound["key"]]
                  for i, batch in enumerate(test)]
    else:  # discrete codes: -log p(x | codes of x) is deterministic
        values = [build_zoo.reconstruction_nll(x.numpy(), exported.serving_default(images=x.numpy())["reconstruction"])
                  for x in test]
    value = float(np.mean(np.concatenate(values)))
    # The same seeds give the Keras model's number (float32 graph vs eager: measured to 1e-4 of ~90 nats).
    assert abs(value - bound["value"]) < 2e-3 + 1e-5 * abs(bound["value"]), (value, bound)
    # model.evaluate's own draws: within 4 standard errors of the difference of two independent estimates
    # (the recorded Monte-Carlo error, 0.05-0.09 nats over 2000 images); deterministic for codes.
    tolerance = 4 * np.sqrt(2) * bound["mc_se"] + 2e-3
    assert abs(value - entry["test"][bound["key"]]) < tolerance, (value, entry["test"][bound["key"]], tolerance)
