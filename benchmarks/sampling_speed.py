"""Sampling speed of the priors and hierarchies: the MAF prior's D-pass sampler against the others.

For each model (its preset, Burda et al.'s networks; fresh weights: speed does not depend on training), the time of
``model.sample(n)`` in Keras (a tf.function over the prior's ``from_noise`` and the decoder, after a warm-up
call) and of the exported TFLite ``sample_from_noise`` signature (LiteRT's interpreter, builtin ops, one
call of n), as samples per second (median of ``--repeats``), and the TFLite file size. The MAF prior samples
by D passes per step (the latent size is static, so the loop is unrolled into the graph: a larger model file).

    python benchmarks/sampling_speed.py --n 1000
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import vaezoo  # noqa: E402
from vaezoo import export  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import reproduce  # noqa: E402

#: name -> config over its preset (the presets already have Burda et al.'s networks; ``vae``'s default has not)
MODELS = {"vae": reproduce.ARCHITECTURE, "vae_vamp": {}, "vae_flow_prior": {}, "vae_2layer": {}, "ladder_vae": {}}


def measure(name: str, n: int, repeats: int) -> dict:
    model = vaezoo.get(name, **MODELS.get(name, {}), seed=0)
    sample = tf.function(lambda seed: _sample(model, n, seed))
    sample(tf.constant([0, 0]))
    keras_times = []
    for r in range(repeats):
        start = time.perf_counter()
        sample(tf.constant([r, 1])).numpy()
        keras_times.append(time.perf_counter() - start)
    from ai_edge_litert.interpreter import Interpreter

    with tempfile.TemporaryDirectory() as folder:
        path = export.tflite(model, Path(folder) / "m.tflite", signatures=["sample_from_noise"])
        size = path.stat().st_size
        runner = Interpreter(model_path=str(path)).get_signature_runner("sample_from_noise")
        shapes = model.noise_shapes() if hasattr(model, "noise_shapes") else model.prior_layer.noise_shapes()
        rng = np.random.default_rng(0)
        noise = {k: (rng.uniform(size=(n, *s)) if "component" in k else rng.normal(size=(n, *s))).astype("float32")
                 for k, s in shapes.items()}
        runner(**noise)
        lite_times = []
        for _ in range(repeats):
            start = time.perf_counter()
            runner(**noise)
            lite_times.append(time.perf_counter() - start)
    return {"model": name, "n": n, "keras_samples_per_second": round(n / statistics.median(keras_times)),
            "tflite_samples_per_second": round(n / statistics.median(lite_times)), "tflite_bytes": size}


def _sample(model, n, seed):
    if hasattr(model, "draw_noise"):  # several stochastic layers: noise for each
        return model.sample_from_noise(**model.draw_noise(n, seed))
    return model.decode(model.prior_layer.from_noise(**model.prior_layer.draw_noise(n, seed)))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--models", nargs="+", default=list(MODELS))
    args = p.parse_args(argv)
    print("| model | Keras samples/s | TFLite samples/s | TFLite file |")
    print("| --- | ---: | ---: | ---: |")
    rows = []
    for name in args.models:
        row = measure(name, args.n, args.repeats)
        rows.append(row)
        print(f"| {name} | {row['keras_samples_per_second']:,} | {row['tflite_samples_per_second']:,} | "
              f"{row['tflite_bytes'] / 1e6:.2f} MB |", flush=True)
    print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
