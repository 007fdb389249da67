"""Where full variational Bayes over the decoder should matter: small training sets.

Trains ``vae`` (a point estimate of the decoder's weights) and ``bayesian_vae`` (a factorised Gaussian
q(theta) over them, a learned N(0, alpha^2) hyperprior per layer; Kingma & Welling 2014, appendix F)
with the same networks on a fixed random N images of MNIST's training set, N in {1,000, 10,000, 60,000},
for the same number of optimizer steps, and measures each on the whole test set:

* the test NLL, importance-sampled (``--eval-samples`` samples per image; for ``bayesian_vae`` every
  z sample is decoded under a weight draw theta ~ q(theta), so theta is integrated out under q, see
  :class:`vaezoo.BayesianVAE`), and for ``bayesian_vae`` also under its posterior-mean decoder;
* the same NLL on 1,000 of the N training images (the generalisation gap);
* a curve: the test NLL (100 samples, 1,000 test images) every ``--curve-every`` blocks of steps.

Settings shared by every run: Burda et al.'s one-layer networks (784-200-200-50 tanh MLPs, Bernoulli
likelihood, N(0, I) prior), batch 100, Adam (epsilon 1e-4) with the IWAE paper's stage schedule squeezed
into the budget, dynamic binarization (the test images binarized once with reproduce.py's seed). An
"epoch" here is a block of ``--block`` steps over the repeated training set, so small and large N
train for the same steps and checkpoint alike; every run is a vaezoo run folder (rerun to resume).

    python benchmarks/full_vb.py --speed                       # seconds per block of each model
    python benchmarks/full_vb.py --steps 50000 --out runs/full_vb
    python benchmarks/full_vb.py --report runs/full_vb         # the table (markdown) and summary.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import keras  # noqa: E402
import numpy as np  # noqa: E402

import vaezoo  # noqa: E402
from vaezoo import data, evaluate, fileio, runs, training  # noqa: E402

import reproduce  # noqa: E402

MODELS = ("vae", "bayesian_vae")
SIZES = (1000, 10000, 60000)
RESULT_FILE = "result.json"


def build(model: str, size: int, seed: int) -> keras.Model:
    extra = {"dataset_size": size} if model == "bayesian_vae" else {}
    return vaezoo.get(model, **reproduce.ARCHITECTURE, seed=seed, **extra)


def train_images(size: int, batch_size: int, data_dir, seed: int):
    """The first ``size`` training images, dynamically binarized afresh on every pass, repeated."""
    return data.load("mnist", "train", batch_size=batch_size, data_dir=data_dir, binarize="dynamic", seed=seed,
                     limit=size).repeat()


def fixed_train_images(size: int, data_dir, examples: int = 1000) -> np.ndarray:
    """Up to ``examples`` of the N training images, binarized once (the generalisation gap)."""
    ds = data.load("mnist", "train", batch_size=1000, data_dir=data_dir, binarize="dynamic", shuffle=False,
                   seed=reproduce.TEST_BINARIZATION_SEED, limit=min(size, examples))
    return np.concatenate([b.numpy() for b in ds])


def compile_model(model, total_steps: int) -> None:
    optimizer = keras.optimizers.Adam(reproduce.paper_schedule(total_steps), beta_1=0.9, beta_2=0.999, epsilon=1e-4)
    model.compile(optimizer)


def nll(model, images, samples, seed, **kwargs):
    if kwargs:  # the posterior-mean decoder of a bayesian_vae
        model = _MeanWeights(model)
    return evaluate.log_likelihood(model, images, num_samples=samples, batch_size=100, seed=seed)


class _MeanWeights:
    """A bayesian_vae seen through its posterior-mean decoder (for evaluate.log_likelihood)."""

    def __init__(self, model):
        self.model, self.data_shape = model, model.data_shape

    def log_weights(self, x, num_samples, seed=None):
        return self.model.log_weights(x, num_samples, seed=seed, weights="mean")


def run_one(model_name: str, size: int, args) -> dict | None:
    out = Path(args.out) / f"{model_name}_n{size}"
    out.mkdir(parents=True, exist_ok=True)
    blocks = -(-args.steps // args.block)
    description = {"model": model_name, "train_examples": size, "steps": blocks * args.block, "block": args.block,
                   "batch_size": args.batch_size, "seed": args.seed, "architecture": reproduce.ARCHITECTURE,
                   "title": f"{model_name}, {size} training images, {blocks * args.block} steps"}
    with runs.open_run(out, description):
        if (out / RESULT_FILE).is_file():
            return json.loads((out / RESULT_FILE).read_text())
        keras.utils.set_random_seed(args.seed)
        train = train_images(size, args.batch_size, args.data_dir, args.seed)
        model = build(model_name, size, args.seed)
        compile_model(model, blocks * args.block)
        curve_images = reproduce.load_images("mnist", "test", args.data_dir, limit=args.curve_examples)
        curve = reproduce.Curve(out, curve_images, args.curve_every, args.curve_samples, blocks, "test", seed=args.seed)
        limit = reproduce.TimeLimit(args.time_limit)
        start = time.monotonic()
        model.fit(train, epochs=blocks, steps_per_epoch=args.block, verbose=args.verbose,
                  callbacks=[*training.standard_callbacks(out, run_info=description), curve, limit])
        if runs.read_state(out)["epochs_done"] < blocks:
            return None
        test = reproduce.load_images("mnist", "test", args.data_dir, limit=args.eval_examples)
        seen = fixed_train_images(size, args.data_dir)
        eval_start = time.monotonic()
        result = dict(description)
        for key, images in (("test", test), ("train", seen)):
            ll = nll(model, images, args.eval_samples, args.seed)
            result[f"{key}_nll"], result[f"{key}_nll_se"] = round(ll.nll, 3), round(ll.standard_error, 3)
        if model_name == "bayesian_vae":
            ll = nll(model, test, args.eval_samples, args.seed, weights="mean")
            result["test_nll_mean_weights"] = round(ll.nll, 3)
            result["test_nll_mean_weights_se"] = round(ll.standard_error, 3)
            result["prior_scales"] = [round(float(np.exp(layer.log_prior_scale.numpy())), 4)
                                      for layer in model.decoder.dense_layers]
            bound = model.evaluate(test, batch_size=100, verbose=0, return_dict=True)
            result["test_bound"] = round(float(bound["bound"]), 3)
            result["test_weight_kl"] = round(float(bound["weight_kl"]), 3)
        result.update({"eval_samples": args.eval_samples, "eval_examples": len(test), "train_examples_scored": len(seen),
                       "eval_seconds": round(time.monotonic() - eval_start, 1),
                       "last_session_train_seconds": round(eval_start - start, 1)})
        fileio.atomic_write_text(out / RESULT_FILE, json.dumps(result, indent=1))
        return result


def report(folder: Path) -> str:
    """The markdown table of the finished runs under ``folder`` (also written to ``summary.json``)."""
    results = {}
    for path in sorted(Path(folder).glob("*/" + RESULT_FILE)):
        r = json.loads(path.read_text())
        results[(r["model"], r["train_examples"])] = r
    lines = ["| training images | vae test NLL | vae train NLL | bayesian_vae test NLL (theta ~ q) | "
             "bayesian_vae, mean weights | bayesian_vae train NLL | bayesian_vae bound / example |",
             "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]

    def cell(r, key):
        return f"{r[key]:.2f} +- {r[key + '_se']:.2f}" if r and key in r else "-"

    for size in sorted({n for _, n in results}):
        v, b = results.get(("vae", size)), results.get(("bayesian_vae", size))
        lines.append(f"| {size:,} | {cell(v, 'test_nll')} | {cell(v, 'train_nll')} | {cell(b, 'test_nll')} | "
                     f"{cell(b, 'test_nll_mean_weights')} | {cell(b, 'train_nll')} | "
                     f"{b['test_bound']:.2f} |" if b else f"| {size:,} | {cell(v, 'test_nll')} | {cell(v, 'train_nll')} "
                     "| - | - | - | - |")
    fileio.atomic_write_text(Path(folder) / "summary.json",
                             json.dumps({f"{m}_n{n}": r for (m, n), r in results.items()}, indent=1))
    return "\n".join(lines)


def speed(args) -> dict:
    """Seconds per block of ``--block`` steps of each model (one warm-up block first)."""
    out = {}
    for name in MODELS:
        model = build(name, 60000, args.seed)
        compile_model(model, 10 * args.block)
        train = train_images(60000, args.batch_size, args.data_dir, args.seed)
        model.fit(train, epochs=1, steps_per_epoch=args.block, verbose=0)
        start = time.perf_counter()
        model.fit(train, epochs=2, steps_per_epoch=args.block, verbose=0)
        out[name] = round((time.perf_counter() - start) / 2, 2)
    return {"seconds_per_block": out, "block": args.block, "batch_size": args.batch_size}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    p.add_argument("--sizes", nargs="+", type=int, default=list(SIZES))
    p.add_argument("--steps", type=int, default=50000, help="optimizer steps of every run")
    p.add_argument("--block", type=int, default=500, help="steps per 'epoch' (checkpoint, curve unit)")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--out", default="runs/full_vb")
    p.add_argument("--data-dir", default=os.environ.get(data.DATA_DIR_ENV, "../shared/data"))
    p.add_argument("--curve-every", type=int, default=10, help="blocks between points of the curve")
    p.add_argument("--curve-samples", type=int, default=100)
    p.add_argument("--curve-examples", type=int, default=1000)
    p.add_argument("--eval-samples", type=int, default=1000)
    p.add_argument("--eval-examples", type=int, default=None, help="test images of the final NLL (default all)")
    p.add_argument("--time-limit", type=float, help="stop after the block that crosses this many seconds")
    p.add_argument("--speed", action="store_true")
    p.add_argument("--report", metavar="FOLDER")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--verbose", type=int, default=0)
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    if args.speed:
        print(json.dumps(speed(args)))
        return 0
    if args.report:
        print(report(Path(args.report)))
        return 0
    for size in args.sizes:  # smallest first: a stop leaves whole sizes
        for name in args.models:
            try:
                result = run_one(name, size, args)
            except runs.RunError as exc:
                raise SystemExit(str(exc)) from None
            if result is None:
                print(f"stopped at the time limit; rerun the same command to resume {args.out}")
                return 0
            print(json.dumps({k: result[k] for k in result if "nll" in k or k in ("model", "train_examples")}))
    print(report(Path(args.out)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
