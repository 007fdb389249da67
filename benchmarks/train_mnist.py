"""Benchmark: train `vae` on dynamically binarized MNIST, with and without XLA.

Prints, for each setting, the seconds per epoch (first epoch, which includes tracing and XLA
compilation, reported apart) and the test-set ELBO in nats (single-sample estimate, averaged
over the 10,000 test images, dynamically binarized with a fixed seed).

    python benchmarks/train_mnist.py --epochs 10 --data-dir ../shared/data
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

import vaezoo  # noqa: E402
from vaezoo import data  # noqa: E402


class EpochTimer(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.times.append(time.perf_counter() - self._start)

    def on_train_begin(self, logs=None):
        self.times = []


def run(args, jit: bool) -> dict:
    keras.utils.set_random_seed(args.seed)
    cfg = vaezoo.get_config(args.model)
    model = vaezoo.get(args.model, seed=args.seed)
    train = data.load("mnist", "train", batch_size=args.batch_size, data_dir=args.data_dir, binarize="dynamic",
                      seed=args.seed)
    test = data.load("mnist", "test", batch_size=1000, data_dir=args.data_dir, binarize="dynamic", seed=1234)
    model.compile(keras.optimizers.Adam(cfg["learning_rate"]), jit_compile=jit)
    timer = EpochTimer()
    model.fit(train, epochs=args.epochs, callbacks=[timer], verbose=0, shuffle=False)
    result = model.evaluate(test, return_dict=True, verbose=0)
    later = timer.times[1:] or timer.times
    return {
        "model": args.model,
        "jit_compile": jit,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "first_epoch_s": round(timer.times[0], 2),
        "s_per_epoch_after_first": round(sum(later) / len(later), 2),
        "test_elbo_nats": round(result["elbo"], 2),
        "test_reconstruction_nats": round(result["reconstruction"], 2),
        "test_kl_nats": round(result["kl"], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="vae")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--data-dir", default=os.environ.get(data.DATA_DIR_ENV, "../shared/data"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jit", choices=("both", "on", "off"), default="both")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    settings = {"both": (False, True), "on": (True,), "off": (False,)}[args.jit]
    results = [run(args, jit) for jit in settings]
    header = f"{'jit_compile':>11} {'epochs':>6} {'1st epoch s':>11} {'s/epoch':>8} {'test ELBO':>10} {'rec':>8} {'KL':>6}"
    print(f"{args.model} on dynamically binarized MNIST, batch {args.batch_size}")
    print(header)
    for r in results:
        print(f"{str(r['jit_compile']):>11} {r['epochs']:>6} {r['first_epoch_s']:>11} {r['s_per_epoch_after_first']:>8} "
              f"{r['test_elbo_nats']:>10} {r['test_reconstruction_nats']:>8} {r['test_kl_nats']:>6}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
