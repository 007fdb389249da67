"""Build the pretrained zoo in savedmodels/: train each family on MNIST, export it, write MANIFEST.json.

One command rebuilds everything (about an hour on 2 CPU cores; ``--only`` rebuilds some):

    python savedmodels/build_zoo.py --data-dir ../shared/data
    python savedmodels/build_zoo.py --only vae iwae

For each model it runs the CLI exactly as a user would (``vaezoo train`` with a fixed seed, then
``vaezoo export`` to a SavedModel in TF Serving's layout ``savedmodels/<name>/1/`` and to a float32
TFLite file ``savedmodels/<name>/<name>.tflite``), evaluates the checkpoint on the MNIST test set
(one seeded binarisation), and records in ``savedmodels/MANIFEST.json``: the config overrides,
data set, epochs, test bound (nats per image), training time, and every exported file's size and
sha256. VQ-VAE families are exported with their trained prior over codes, so ``sample`` and
``sample_from_noise`` generate digits. The models are sized to keep each export to a few MB.
Checkpoints and TensorBoard logs stay in ``runs/zoo/`` (not committed).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

import vaezoo  # noqa: E402
from vaezoo import cli, data  # noqa: E402

HERE = Path(__file__).resolve().parent
SEED = 0

#: name -> (config overrides, epochs, prior overrides or None, prior epochs)
ZOO = {
    "vae": ({"hidden_units": [256, 128], "latent_dim": 16}, 10, None, 0),
    "beta_vae": ({"hidden_units": [256, 128], "latent_dim": 16, "beta": 4.0}, 10, None, 0),
    "iwae": ({"num_samples": 5}, 10, None, 0),
    "vq_vae": ({}, 3, {"channels": 32}, 3),
    "vq_vae2": ({}, 3, {"channels": 32}, 3),
}


def _sets(overrides: dict) -> list[str]:
    return [a for k, v in overrides.items() for a in ("--set", f"{k}={json.dumps(v)}")]


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


def _evaluate(checkpoint: Path, data_dir: str, vq=None) -> dict:
    model = keras.models.load_model(checkpoint)
    model.compile()
    test = data.load("mnist", "test", batch_size=500, data_dir=data_dir, binarize="dynamic", seed=1)
    if vq is not None:
        test = data.codes_dataset(vq, test)
    return {k: round(float(v), 3) for k, v in model.evaluate(test, return_dict=True, verbose=0).items()}


def build(name: str, data_dir: str, runs: Path, out: Path, limit: int | None = None) -> dict:
    overrides, epochs, prior_overrides, prior_epochs = ZOO[name]
    common = ["--dataset", "mnist", "--data-dir", data_dir, "--seed", str(SEED), "--verbose", "0",
              *(["--limit", str(limit)] if limit else [])]
    run = runs / name
    shutil.rmtree(run, ignore_errors=True)
    start = time.perf_counter()
    _run(["train", name, *_sets(overrides), "--epochs", str(epochs), "--out", str(run), *common])
    entry = {"family": vaezoo.model_info(name).builder.__name__, "config_overrides": overrides,
             "dataset": "mnist (dynamically binarized; test: one seeded binarization)", "epochs": epochs,
             "seed": SEED, "train_seconds": round(time.perf_counter() - start)}
    entry["test"] = _evaluate(run / "model.keras", data_dir)
    export_args = []
    if prior_overrides is not None:
        vq = keras.models.load_model(run / "model.keras")
        prior_run = runs / f"{name}_prior"
        shutil.rmtree(prior_run, ignore_errors=True)
        start = time.perf_counter()
        _run(["train", vq.prior_name, "--vqvae", str(run / "model.keras"), *_sets(prior_overrides),
              "--epochs", str(prior_epochs), "--out", str(prior_run), *common])
        entry["prior"] = {"name": vq.prior_name, "config_overrides": prior_overrides, "epochs": prior_epochs,
                          "train_seconds": round(time.perf_counter() - start),
                          "test": _evaluate(prior_run / "model.keras", data_dir, vq=vq)}
        export_args = ["--prior", str(prior_run / "model.keras")]
    target = out / name
    shutil.rmtree(target, ignore_errors=True)
    for fmt in ("saved_model", "tflite"):
        _run(["export", name, "--checkpoint", str(run / "model.keras"), "--format", fmt, "--out", str(out),
              *(["--version", "1"] if fmt == "saved_model" else []), *export_args])
    saved, lite = target / "1", target / f"{name}.tflite"
    entry["signatures"] = {"saved_model": sorted(vaezoo.load_exported(saved).signatures),
                           "tflite": sorted(vaezoo.load_exported(lite).signatures)}
    entry["files"] = _files(out, [saved, lite])
    entry["saved_model_bytes"] = sum(f.stat().st_size for f in saved.rglob("*") if f.is_file())
    entry["tflite_bytes"] = lite.stat().st_size
    entry["command"] = f"python savedmodels/build_zoo.py --only {name}"
    return entry


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=os.environ.get(data.DATA_DIR_ENV, "../shared/data"))
    parser.add_argument("--only", nargs="*", choices=list(ZOO), help="rebuild these models only")
    parser.add_argument("--runs", default="runs/zoo", help="where checkpoints and logs go")
    parser.add_argument("--out", default=str(HERE), help="the zoo folder (default: this one)")
    parser.add_argument("--limit", type=int, help="train on the first N images only (smoke runs)")
    args = parser.parse_args()
    out = Path(args.out)
    manifest_path = out / "MANIFEST.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    models = manifest.setdefault("models", {})
    for name in args.only or list(ZOO):
        print(f"== {name}", flush=True)
        models[name] = build(name, args.data_dir, Path(args.runs), out, args.limit)
        manifest["versions"] = {"vaezoo": vaezoo.__version__, "tensorflow": __import__("tensorflow").__version__,
                                "keras": keras.__version__}
        out.mkdir(parents=True, exist_ok=True)
        manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
        print(json.dumps({name: {k: models[name][k] for k in ("test", "saved_model_bytes", "tflite_bytes")}}),
              flush=True)


if __name__ == "__main__":
    main()
