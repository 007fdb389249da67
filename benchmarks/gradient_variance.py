"""Gradient variance of the score-function (log-derivative) estimator vs reparameterisation.

On a small VAE and a fixed batch of sprites, draws the encoder's training gradient many times
with each estimator (vaezoo.evaluate.gradient_statistics) and prints the summed variance and the
ratio to the reparameterisation gradient's: for the score-function estimator with its baseline
(set to the mean learning signal) and without one (b = 0).

    python benchmarks/gradient_variance.py --draws 2000

``--study dreg``: the encoder-gradient variance of IWAE's reparameterised gradient against DReG's (Tucker et
al. 2019) at K = 1, 8, 64 on the same model, and of RWS's wake-phi update against its DReG form; the means are
compared too (both unbiased: the largest difference in standard errors).

    python benchmarks/gradient_variance.py --study dreg --draws 2000
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import vaezoo  # noqa: E402
from vaezoo import data, evaluate  # noqa: E402


def _encoder_mask(model):
    sizes = [int(np.prod(v.shape)) for v in model.trainable_variables]
    names = [v.path for v in model.trainable_variables]
    return np.concatenate([np.full(n, "posterior" in p or "encoder" in p) for n, p in zip(sizes, names)])


def dreg_study(args) -> None:
    x = data.render_sprites(data.sprite_factors(args.batch, seed=0), size=32)
    print(f"encoder-gradient variance over {args.draws} draws, 1024-64-4 MLP on {args.batch} sprites (the same weights "
          "for every row of a K)")
    print("| model | K | estimator | summed variance | ratio to the reference | max mean difference (s.e.) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for family, reference, other in [("iwae", "reparameterization", "dreg"), ("rws", "wake", "dreg")]:
        for k in args.k:
            stats = {}
            for estimator in (reference, other):
                keras.utils.set_random_seed(0)
                model = vaezoo.get(family, data_shape=[32, 32, 1], hidden_units=[64], latent_dim=4, num_samples=k,
                                   gradient_estimator=estimator, seed=0)
                stats[estimator] = evaluate.gradient_statistics(model, x, num_draws=args.draws, seed=1)
            mask = _encoder_mask(model)
            ref, new = stats[reference], stats[other]
            se = np.sqrt((ref["variance"][mask] + new["variance"][mask]) / args.draws)
            z = np.abs(ref["mean"][mask] - new["mean"][mask]) / np.maximum(se, 1e-12)
            for estimator in (reference, other):
                variance = stats[estimator]["variance"][mask].sum()
                print(f"| {family} | {k} | {estimator} | {variance:.4g} | {variance / ref['variance'][mask].sum():.3f} | "
                      f"{'-' if estimator == reference else f'{z.max():.1f}'} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--draws", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--study", choices=["score", "dreg"], default="score")
    parser.add_argument("--k", type=int, nargs="+", default=[1, 8, 64], help="samples per example (--study dreg)")
    args = parser.parse_args()
    if args.study == "dreg":
        dreg_study(args)
        return
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
