"""Sampling speed of the PixelCNN priors: the row-window sampler against whole-map steps.

vaezoo's sampler (``vaezoo.models.pixelcnn._sample_loop``) runs, at each of the h*w positions, the network on the
rows that position's logits depend on (``GatedPixelCNN.reach`` rows above it) and a conditional network's
condition features once. The reference here is the plain loop it replaced: the whole map at every position, the
condition network included. Both run as one ``tf.while_loop`` in a ``tf.function`` with the same uniform noise;
the script checks they draw the same codes, then times them in alternating rounds (median seconds of
``--repeats`` calls of ``--n`` samples) for the shipped priors' configurations (fresh weights: speed does not
depend on training): ``pixelcnn_prior`` over ``vq_vae``'s 7x7 codes and ``hierarchical_pixelcnn_prior`` over
``vq_vae2``'s 7x7 top and 14x14 bottom codes (32 channels, as shipped).

    python benchmarks/pixelcnn_sampling.py --n 200 --repeats 3 --out docs/pixelcnn_sampling.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import vaezoo  # noqa: E402
from vaezoo.layers import categorical_from_uniform  # noqa: E402
from vaezoo.models import pixelcnn  # noqa: E402

#: prior -> (its VQ-VAE, overrides of the shipped entry: benchmarks/pretrained_zoo.py TRAINED)
PRIORS = {"pixelcnn_prior": ("vq_vae", {}), "hierarchical_pixelcnn_prior": ("vq_vae2", {"channels": 32})}


@tf.autograph.experimental.do_not_convert
def whole_map_loop(network, noise, condition):
    """The reference: every step runs the network, condition network included, on the whole map."""
    h, w = network.code_shape
    position = tf.reshape(tf.range(h * w), [1, h, w])

    def step(k, codes):
        logits = network(codes, condition)[:, k // w, k % w]
        drawn = categorical_from_uniform(logits, noise[:, k // w, k % w])
        return k + 1, tf.where(position == k, drawn[:, None, None], codes)

    codes = tf.zeros(tf.shape(noise), tf.int32)
    return tf.while_loop(lambda k, _: k < h * w, step, (tf.constant(0), codes))[1]


def levels(prior):
    """(network, condition level or None) per level, in sampling order."""
    if hasattr(prior, "bottom_network"):
        return {"top": (prior.top_network, None), "bottom": (prior.bottom_network, "top")}
    return {"codes": (prior.network, None)}


def draw(loop, prior, noise):
    codes = {}
    for level, (network, condition) in levels(prior).items():
        codes[level] = loop(network, noise[level], None if condition is None else codes[condition])
    return codes


def measure(name: str, n: int, repeats: int) -> dict:
    vq_name, overrides = PRIORS[name]
    vq = vaezoo.get(vq_name)
    prior = vaezoo.get(name, **vq.prior_config(), **overrides, seed=0)
    rng = np.random.default_rng(0)
    noise = {level: tf.constant(rng.random((n, *network.code_shape)), tf.float32)
             for level, (network, _) in levels(prior).items()}
    loops = {"window": tf.function(lambda: draw(pixelcnn._sample_loop, prior, noise)),
             "whole map": tf.function(lambda: draw(whole_map_loop, prior, noise))}
    drawn = {k: {level: c.numpy() for level, c in f().items()} for k, f in loops.items()}  # traces, warms up
    same = all(np.array_equal(drawn["window"][level], drawn["whole map"][level]) for level in drawn["window"])
    times = {k: [] for k in loops}
    for _ in range(repeats):
        for k, f in loops.items():
            start = time.perf_counter()
            {level: c.numpy() for level, c in f().items()}
            times[k].append(time.perf_counter() - start)
    med = {k: statistics.median(v) for k, v in times.items()}
    reach = {level: network.reach for level, (network, _) in levels(prior).items()}
    return {"prior": name, "n": n, "same_codes": same, "reach": reach,
            "code_shapes": {level: list(network.code_shape) for level, (network, _) in levels(prior).items()},
            "window_samples_per_second": round(n / med["window"], 1),
            "whole_map_samples_per_second": round(n / med["whole map"], 1),
            "speedup": round(med["whole map"] / med["window"], 2),
            "seconds": {k: [round(t, 3) for t in v] for k, v in times.items()}}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--priors", nargs="+", default=list(PRIORS), choices=list(PRIORS))
    p.add_argument("--out", help="write the rows as JSON here")
    args = p.parse_args(argv)
    rows = [measure(name, args.n, args.repeats) for name in args.priors]
    print("| prior | code maps (reach) | window samples/s | whole-map samples/s | speed-up | same codes |")
    print("| --- | --- | ---: | ---: | ---: | --- |")
    for r in rows:
        maps = ", ".join(f"{level} {'x'.join(map(str, s))} ({r['reach'][level]})" for level, s in r["code_shapes"].items())
        print(f"| {r['prior']} | {maps} | {r['window_samples_per_second']} | {r['whole_map_samples_per_second']} | "
              f"{r['speedup']:.2f}x | {r['same_codes']} |")
    if args.out:
        Path(args.out).write_text(json.dumps({"rows": rows, "cpus": os.cpu_count(), "tensorflow": tf.__version__},
                                             indent=1))
    return 0 if all(r["same_codes"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
