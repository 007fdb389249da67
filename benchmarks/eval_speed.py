"""Speed of the importance-sampled test NLL (:func:`vaezoo.evaluate.log_likelihood`), with and without XLA.

The evaluation users run most: S = 5000 importance samples per test image (Burda et al. 2016), on the shipped
``vae`` and ``iwae`` (``vae.mnist_dynamic``, ``iwae.mnist_dynamic``: Burda et al.'s one-layer MLP, 50 latent
dimensions) over ``--images`` MNIST test images (dynamically binarized with the reproduction's fixed seed). Each
configuration is warmed up first (traced, XLA-compiled on one batch), then the configurations are timed one after
another in each of ``--rounds`` rounds, so that pairs are measured side by side; the median over rounds is reported
as importance samples per second (images x S / seconds) and as the wall time that rate gives for all 10,000 test
images. The estimates with and without XLA are compared (the same seeds: they differ by float rounding only).

    python benchmarks/eval_speed.py --data-dir ../shared/data --images 500 --rounds 3 --out docs/eval_speed.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

import vaezoo  # noqa: E402
from vaezoo import data, evaluate  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import reproduce  # noqa: E402

MODELS = ("vae", "iwae")
TEST_IMAGES = 10_000


def test_images(data_dir, n: int) -> np.ndarray:
    ds = data.load("mnist", "test", batch_size=100, binarize="dynamic", seed=reproduce.TEST_BINARIZATION_SEED,
                   shuffle=False, data_dir=data_dir)
    return np.concatenate([b.numpy() for b in ds])[:n]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=os.environ.get(data.DATA_DIR_ENV, "../shared/data"))
    p.add_argument("--images", type=int, default=500, help="test images timed per configuration and round")
    p.add_argument("--samples", type=int, default=5000, help="importance samples per image")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--models", nargs="+", default=list(MODELS))
    p.add_argument("--out", help="write the results here (JSON)")
    args = p.parse_args(argv)

    images = test_images(args.data_dir, args.images)
    models = {name: vaezoo.get(name, pretrained=True) for name in args.models}
    configs = [(name, jit) for name in args.models for jit in (False, True)]

    def run(name, jit, x, samples=args.samples):
        return evaluate.log_likelihood(models[name], x, num_samples=samples, batch_size=args.batch_size,
                                       seed=0, jit_compile=jit)

    warmup = {}
    for name, jit in configs:  # traces and compiles every chunk shape the timed runs use
        start = time.perf_counter()
        run(name, jit, images[: args.batch_size])
        warmup[f"{name}/{'xla' if jit else 'graph'}"] = round(time.perf_counter() - start, 2)
    seconds = {f"{name}/{'xla' if jit else 'graph'}": [] for name, jit in configs}
    estimates = {}
    for r in range(args.rounds):
        for name, jit in configs:
            key = f"{name}/{'xla' if jit else 'graph'}"
            start = time.perf_counter()
            result = run(name, jit, images)
            seconds[key].append(time.perf_counter() - start)
            estimates[key] = result.nll
            print(f"round {r}: {key} {seconds[key][-1]:.1f} s, NLL {result.nll:.3f}", file=sys.stderr, flush=True)
    work = args.images * args.samples
    rows = {}
    for key, times in seconds.items():
        median = statistics.median(times)
        rows[key] = {"seconds": [round(t, 2) for t in times], "median_seconds": round(median, 2),
                     "samples_per_second": round(work / median), "nll": round(estimates[key], 4),
                     "warmup_seconds": warmup[key],
                     "wall_seconds_10000_images": round(median * TEST_IMAGES / args.images)}
    for name in args.models:
        graph, xla = rows[f"{name}/graph"], rows[f"{name}/xla"]
        ratios = [g / x for g, x in zip(seconds[f"{name}/graph"], seconds[f"{name}/xla"])]
        xla["speedup_over_graph"] = round(statistics.median(ratios), 3)
        xla["nll_difference_to_graph"] = round(xla["nll"] - graph["nll"], 5)
    out = {"images": args.images, "samples": args.samples, "batch_size": args.batch_size, "rounds": args.rounds,
           "machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine()},
           "command": "python benchmarks/eval_speed.py " + " ".join(argv if argv is not None else sys.argv[1:]),
           "rows": rows}
    text = json.dumps(out, indent=1)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
