"""Gradient variance of the score-function (log-derivative) estimator vs reparameterisation.

On a small VAE and a fixed batch of sprites, draws the encoder's training gradient many times
with each estimator (vaezoo.evaluate.gradient_statistics) and prints the summed variance and the
ratio to the reparameterisation gradient's: for the score-function estimator with its baseline
(set to the mean learning signal) and without one (b = 0).

    python benchmarks/gradient_variance.py --draws 2000
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import vaezoo  # noqa: E402
from vaezoo import data, evaluate  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--draws", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=16)
    args = parser.parse_args()
    x = data.render_sprites(data.sprite_factors(args.batch, seed=0), size=32)
    rows = []
    for label, estimator, baseline in [("reparameterization", "reparameterization", None),
                                       ("score function, baseline", "score_function", "mean"),
                                       ("score function, no baseline", "score_function", "zero")]:
        keras.utils.set_random_seed(0)
        model = vaezoo.get("vae", data_shape=[32, 32, 1], hidden_units=[64], latent_dim=4,
                           gradient_estimator=estimator, seed=0)
        if baseline == "mean":
            model.score_baseline.assign(float(np.mean(model.compute_terms(x, seed=0)["log_px"])))
        stats = evaluate.gradient_statistics(model, x, num_draws=args.draws, seed=1)
        sizes = [int(np.prod(v.shape)) for v in model.trainable_variables]
        names = [v.path for v in model.trainable_variables]
        mask = np.concatenate([np.full(n, "posterior" in p or "encoder" in p) for n, p in zip(sizes, names)])
        rows.append((label, stats["variance"][mask].sum(), stats["mean"][mask]))
    reference = rows[0][1]
    print(f"encoder-gradient variance over {args.draws} draws, VAE 1024-64-4 on {args.batch} sprites")
    print("| estimator | summed variance | ratio to reparameterization |")
    print("| --- | --- | --- |")
    for label, variance, _ in rows:
        print(f"| {label} | {variance:.4g} | {variance / reference:.1f} |")


if __name__ == "__main__":
    main()
