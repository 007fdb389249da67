"""Reproduce Burda et al. 2016, Table 1 (MNIST, one stochastic layer): VAE vs IWAE for K = 1, 5, 50.

The paper's setting: 784-200-200-50 MLPs with tanh (encoder and decoder mirrored), Bernoulli
likelihood, batch size 20, Adam (beta1 0.9, beta2 0.999, epsilon 1e-4) with learning rate
1e-3 * 10^(-i/7) for 3^i epochs, i = 0..7 (3280 epochs in all). ``--epochs`` shortens that
schedule proportionally: stage i lasts the fraction 3^i / 3280 of the budget's optimizer steps.
Test NLL is estimated with 5000 importance samples (vaezoo.evaluate.log_likelihood).

    python benchmarks/iwae_mnist.py --epochs 10 --data-dir ../shared/data
    python benchmarks/iwae_mnist.py --dataset binarized_mnist --epochs 10   # fixed binarization

Prints a Markdown table next to the paper's numbers.

Reference: Burda, Grosse & Salakhutdinov, "Importance Weighted Autoencoders", ICLR 2016, Table 1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import vaezoo  # noqa: E402
from vaezoo import data, evaluate  # noqa: E402

# The paper's settings, schedule and numbers: one place, the reproduction harness.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from reproduce import ARCHITECTURE, PAPER, PAPER_EPOCHS, paper_schedule  # noqa: E402,F401


class EpochTimer(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.times = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.times.append(time.perf_counter() - self._start)


def datasets(args):
    binarize = "dynamic" if args.dataset == "mnist" else "none"
    train = data.load(args.dataset, "train", batch_size=20, data_dir=args.data_dir, binarize=binarize, seed=args.seed)
    # One fixed binarization of the test images (seeded), evaluated by every model.
    test = data.load(args.dataset, "test", batch_size=100, data_dir=args.data_dir, binarize=binarize, seed=12345,
                     limit=args.eval_examples, shuffle=False)
    test = np.concatenate([b.numpy() for b in test])
    return train, test


def run(family: str, k: int, args, train, test) -> dict:
    keras.utils.set_random_seed(args.seed)
    model = vaezoo.get(family, **ARCHITECTURE, num_samples=k, seed=args.seed)
    steps = args.epochs * sum(1 for _ in train)
    optimizer = keras.optimizers.Adam(paper_schedule(steps), beta_1=0.9, beta_2=0.999, epsilon=1e-4)
    model.compile(optimizer, jit_compile=not args.no_jit, steps_per_execution=args.steps_per_execution)
    timer = EpochTimer()
    model.fit(train, epochs=args.epochs, callbacks=[timer], verbose=args.verbose, shuffle=False)
    start = time.perf_counter()
    ll = evaluate.log_likelihood(model, test, num_samples=args.eval_samples, batch_size=100, seed=args.seed)
    return {
        "model": family, "k": k, "epochs": args.epochs, "dataset": args.dataset,
        "test_nll": round(ll.nll, 2), "test_nll_se": round(ll.standard_error, 2),
        "paper_nll": PAPER[args.dataset].get((family, k)),
        "s_per_epoch": round(float(np.mean(timer.times[1:] or timer.times)), 1),
        "eval_s": round(time.perf_counter() - start, 1),
        "eval_examples": len(test), "eval_samples": args.eval_samples,
    }


def markdown(results) -> str:
    lines = ["| model | K | test NLL (nats) | paper | s/epoch |", "| --- | --- | --- | --- | --- |"]
    for r in results:
        paper = f"{r['paper_nll']:.2f}" if r["paper_nll"] else "-"
        lines.append(f"| {r['model']} | {r['k']} | {r['test_nll']:.2f} ± {r['test_nll_se']:.2f} | {paper} | "
                     f"{r['s_per_epoch']} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=10, help=f"budget (the paper: {PAPER_EPOCHS})")
    parser.add_argument("--models", nargs="+", default=["vae", "iwae"], choices=["vae", "iwae"])
    parser.add_argument("--k", nargs="+", type=int, default=[1, 5, 50])
    parser.add_argument("--dataset", choices=["mnist", "binarized_mnist"], default="mnist")
    parser.add_argument("--data-dir", default=os.environ.get(data.DATA_DIR_ENV, "../shared/data"))
    parser.add_argument("--eval-examples", type=int, default=10_000, help="test examples for the NLL")
    parser.add_argument("--eval-samples", type=int, default=5000, help="importance samples per test example")
    parser.add_argument("--steps-per-execution", type=int, default=100)
    parser.add_argument("--no-jit", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--verbose", type=int, default=0)
    parser.add_argument("--json", help="append each result as a JSON line to this file")
    args = parser.parse_args()

    train, test = datasets(args)
    results = []
    for family in args.models:
        for k in args.k:
            if family == "iwae" and k == 1 and "vae" in args.models and 1 in args.k:
                continue  # IWAE with K=1 is the VAE (tested): train it once
            result = run(family, k, args, train, test)
            results.append(result)
            print(json.dumps(result), flush=True)
            if args.json:
                with open(args.json, "a") as f:
                    f.write(json.dumps(result) + "\n")
    print(f"\n{args.dataset}, {args.epochs} epochs (paper: {PAPER_EPOCHS}), test NLL with {args.eval_samples} "
          f"importance samples on {len(test)} test images\n")
    print(markdown(results))


if __name__ == "__main__":
    main()
