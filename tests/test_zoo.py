"""The pretrained zoo in savedmodels/: complete, intact, and the models it says it holds."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

import vaezoo
from vaezoo import data

ZOO = Path(__file__).resolve().parents[1] / "savedmodels"
MANIFEST = json.loads((ZOO / "MANIFEST.json").read_text())["models"]


def test_the_zoo_holds_registered_families_and_every_family_with_pretrained_weights():
    # savedmodels/ serves the trained models: each entry is a registered family, and every family
    # that ships pretrained weights (vaezoo.list_pretrained) is exported here.
    families = {vaezoo.model_info(n).builder.__name__ for n in vaezoo.list_models()}
    covered = {e["family"] for e in MANIFEST.values()}
    covered |= {vaezoo.model_info(e["prior"]["name"]).builder.__name__ for e in MANIFEST.values() if "prior" in e}
    assert covered <= families
    shipped = {vaezoo.model_info(key.split(".")[0]).builder.__name__ for key in vaezoo.list_pretrained()}
    assert shipped and shipped <= covered, shipped - covered


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
        noise = {k: rng.uniform(size=(2, *shape[1:])).astype("float32") for k, (shape, _) in specs.items()}
        images = exported.sample_from_noise(**noise)["images"]
        assert images.shape == (2, 28, 28, 1) and images.min() >= 0 and images.max() <= 1


@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_exported_models_score_what_the_manifest_says(name, data_dir):
    """Re-evaluate each SavedModel on the same test binarisation: it is the model that was trained."""
    entry = MANIFEST[name]
    exported = vaezoo.load_exported(ZOO / name)
    test = data.load("mnist", "test", batch_size=500, data_dir=data_dir, binarize="dynamic", seed=1)
    if "elbo" in exported.signatures:  # continuous latents: the bound, one sample per image
        key = "iwae_bound" if "iwae_bound" in entry["test"] else "elbo"
        values = [exported.elbo(images=x.numpy(), seed=np.array([0, i], "int32"))[key] for i, x in enumerate(test)]
        tolerance = 0.5  # Monte-Carlo noise of a 10,000-image average
    else:  # discrete codes: -log p(x | codes of x) is deterministic
        values = []
        for x in test:
            x = x.numpy()
            p = np.clip(exported.serving_default(images=x)["reconstruction"].astype("float64"), 1e-7, 1 - 1e-7)
            values.append(-(x * np.log(p) + (1 - x) * np.log1p(-p)).sum(axis=(1, 2, 3)))
        key, tolerance = "reconstruction", 0.5
    value = float(np.mean(np.concatenate(values)))
    assert abs(value - entry["test"][key]) < tolerance, (value, entry["test"][key])
