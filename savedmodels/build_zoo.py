"""Build savedmodels/ from the shipped pretrained weights: one SavedModel + TFLite file per model.

Every model that ships weights in ``vaezoo/weights/`` (its default tag; ``vaezoo list --pretrained``)
is exported exactly as a user would export it, by the CLI:

    vaezoo export NAME --pretrained --format saved_model --out savedmodels --version 1
    vaezoo export NAME --pretrained --format tflite --out savedmodels

to a SavedModel in TF Serving's layout ``savedmodels/<name>/1/`` and a float32 TFLite file
``savedmodels/<name>/<name>.tflite``. A VQ-VAE goes with its shipped prior over codes, so ``sample``
and ``sample_from_noise`` generate images. Priors are not exported on their own (they generate codes,
not images). ``savedmodels/MANIFEST.json`` records per model: the weights' key, family, data set,
the test metric of the weights (from ``vaezoo/weights/manifest.json``), the Keras model's metrics on
one fixed test set (``data``, ``test``: ``model.evaluate``), the Keras model's seeded bound on that set
(``bound``: what ``tests/test_zoo.py`` computes again with the SavedModel, at the same seeds, and its
Monte-Carlo standard error, so that the test's tolerances are what fixed seeds give), the signatures, and
every exported file's size and sha256. Models without shipped weights are dropped. ``--remeasure``
records ``test`` and ``bound`` again without exporting (for when the evaluation data change).

    python savedmodels/build_zoo.py --data-dir ../shared/data
    python savedmodels/build_zoo.py --only vae iwae
    python savedmodels/build_zoo.py --remeasure
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import vaezoo  # noqa: E402
from vaezoo import cli, data  # noqa: E402

HERE = Path(__file__).resolve().parent


def shipped() -> dict[str, vaezoo.pretrained.Pretrained]:
    """The default weights of every shipped model that generates images (priors go with their VQ-VAE)."""
    entries = vaezoo.pretrained.manifest()
    priors = {e.prior for e in entries.values() if e.prior}
    return {e.name: e for e in entries.values() if e.default and e.key not in priors}


def _run(argv: list[str]) -> None:
    code = cli.main(argv)
    if code:
        sys.exit(f"vaezoo {' '.join(argv)} failed with exit code {code}")


def _files(root: Path, paths: list[Path]) -> dict:
    out = {}
    for path in paths:
        for f in sorted([path] if path.is_file() else (p for p in path.rglob("*") if p.is_file())):
            out[f.relative_to(root).as_posix()] = {"bytes": f.stat().st_size,
                                                   "sha256": hashlib.sha256(f.read_bytes()).hexdigest()}
    return out


def test_spec(entry) -> dict:
    """The fixed test set of the bound recorded here: the weights' own test data, 2000 images at most."""
    spec = dict(entry.metric["data"])
    return {**spec, "limit": min(spec.get("limit") or 2000, 2000)}


def _evaluate(model, spec: dict, data_dir: str) -> dict:
    model.compile()
    spec = dict(spec)
    test = data.load(spec.pop("name"), spec.pop("split"), data_dir=data_dir, shuffle=False, **spec)
    keras.utils.set_random_seed(0)
    return {k: round(float(v), 3) for k, v in model.evaluate(test, return_dict=True, verbose=0).items()}


def bound_key(model) -> str | None:
    """The per-example bound the SavedModel's ``elbo`` signature returns and the test compares, or ``None``
    for discrete codes (then -log p(x | z_q(x)) from the reconstruction, deterministic)."""
    if "elbo" not in model.endpoints():
        return None
    return "iwae_bound" if "iwae_bound" in model.metric_names else "elbo"


def reconstruction_nll(x, p):
    """-log p(x | z_q(x)) of binary images from Bernoulli means (clipped at 1e-7, as a float32 mean may be 0 or 1)."""
    p = np.clip(np.asarray(p, "float64"), 1e-7, 1 - 1e-7)
    return -(x * np.log(p) + (1 - x) * np.log1p(-p)).sum(axis=tuple(range(1, x.ndim)))


def seeded_bound(model, spec: dict, data_dir: str) -> dict:
    """The Keras model's bound per test image at seeds ``[0, batch index]`` (what the SavedModel's ``elbo``
    signature gives at those seeds), its mean, and the Monte-Carlo standard error of that mean (from a
    second pass at seeds ``[1, batch index]``); for discrete codes the deterministic reconstruction NLL."""
    spec = dict(spec)
    test = list(data.load(spec.pop("name"), spec.pop("split"), data_dir=data_dir, shuffle=False, **spec))
    key = bound_key(model)
    if key is None:
        values = np.concatenate([reconstruction_nll(x.numpy(), model.reconstruct(x)) for x in test])
        return {"key": "reconstruction", "value": round(float(values.mean()), 4), "mc_se": 0.0}
    passes = [np.concatenate([model.compute_terms(x, training=False, seed=tf.constant([s, i], tf.int32))[key].numpy()
                              for i, x in enumerate(test)]) for s in (0, 1)]
    se = float(np.std(passes[0] - passes[1], ddof=1) / np.sqrt(2 * len(passes[0])))
    return {"key": key, "value": round(float(passes[0].mean()), 4), "mc_se": round(se, 4), "seeds": "[0, batch index]"}


def build(entry, data_dir: str, out: Path) -> dict:
    name = entry.name
    target = out / name
    shutil.rmtree(target, ignore_errors=True)
    for fmt in ("saved_model", "tflite"):
        _run(["export", name, "--pretrained", entry.tag, "--format", fmt, "--out", str(out),
              *(["--version", "1"] if fmt == "saved_model" else [])])
    model = vaezoo.get(entry.key, pretrained=True)
    spec = test_spec(entry)
    record = {"pretrained": entry.key, "family": type(model).__name__, "dataset": entry.dataset,
              "data_shape": list(model.data_shape), "epochs": entry.epochs,
              "weights_metric": {k: entry.metric[k] for k in ("name", "value", "unit")},
              "data": spec, "test": _evaluate(model, spec, data_dir), "bound": seeded_bound(model, spec, data_dir)}
    if entry.prior:
        prior = vaezoo.pretrained_info(entry.prior)
        record["prior"] = {"pretrained": prior.key, "name": prior.name, "epochs": prior.epochs,
                           "weights_metric": {k: prior.metric[k] for k in ("name", "value", "unit")}}
    saved, lite = target / "1", target / f"{name}.tflite"
    record["signatures"] = {"saved_model": sorted(vaezoo.load_exported(saved).signatures),
                            "tflite": sorted(vaezoo.load_exported(lite).signatures)}
    record["files"] = _files(out, [saved, lite])
    record["saved_model_bytes"] = sum(f.stat().st_size for f in saved.rglob("*") if f.is_file())
    record["tflite_bytes"] = lite.stat().st_size
    record["command"] = f"python savedmodels/build_zoo.py --only {name}"
    return record


def main(argv=None) -> None:
    models = shipped()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=os.environ.get(data.DATA_DIR_ENV, "../shared/data"))
    parser.add_argument("--only", nargs="*", choices=sorted(models), help="rebuild these models only")
    parser.add_argument("--out", default=str(HERE), help="the zoo folder (default: this one)")
    parser.add_argument("--remeasure", action="store_true",
                        help="record test and bound again (the exported files stay as they are)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    manifest_path = out / "MANIFEST.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    # Only shipped models stay: the folders of models without weights go.
    kept = {name: record for name, record in manifest.get("models", {}).items() if name in models}
    for gone in sorted(set(manifest.get("models", {})) - set(kept)):
        shutil.rmtree(out / gone, ignore_errors=True)
    for name in args.only or sorted(models):
        print(f"== {name} ({models[name].key})", flush=True)
        if args.remeasure:
            if name not in kept:
                parser.error(f"--remeasure: {name} has no exported files in {out}; build it first (--only {name}).")
            model = vaezoo.get(models[name].key, pretrained=True)
            spec = kept[name]["data"]
            kept[name] = {**kept[name], "test": _evaluate(model, spec, args.data_dir),
                          "bound": seeded_bound(model, spec, args.data_dir)}
        else:
            kept[name] = build(models[name], args.data_dir, out)
        print(json.dumps({name: {k: kept[name][k] for k in ("test", "bound", "saved_model_bytes", "tflite_bytes")}}),
              flush=True)
    manifest = {"models": dict(sorted(kept.items())),
                "versions": {"vaezoo": vaezoo.__version__, "tensorflow": __import__("tensorflow").__version__,
                             "keras": keras.__version__}}
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")


if __name__ == "__main__":
    main()
