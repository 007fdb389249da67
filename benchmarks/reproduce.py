"""Reproduce the likelihoods of Burda, Grosse & Salakhutdinov 2016 (IWAE), one stochastic layer.

The paper's setting, kept here: 784-200-200-50 MLPs with tanh (encoder and decoder mirrored),
Bernoulli likelihood, standard normal prior, Adam (beta1 0.9, beta2 0.999, epsilon 1e-4) with the
stage schedule: learning rate 1e-3 * 10^(-i/7) for 3^i epochs, i = 0..7 (3280 epochs in all); test
NLL from 5000 importance samples on all 10,000 test images (vaezoo.evaluate.log_likelihood). Data:
dynamically binarized MNIST (``--dataset mnist``, a fresh Bernoulli draw of every image each epoch;
the test images binarized once with a fixed seed), or the fixed binarization of Larochelle & Murray
(``--dataset binarized_mnist``: 50k train, early stopping on the 10k validation images, test 10k).

``--budget N`` squeezes the schedule into N epochs (stage i lasts 3^i/3280 of the budget's optimizer
steps); ``--budget 3280`` is the paper's schedule unchanged. What may differ from the paper, for
speed on a CPU, is only how the steps are run: ``--batch-size`` (the paper: 20), XLA and steps per
execution (vaezoo's defaults). Every run is a vaezoo run folder (crash-safe checkpoints, resume by
rerunning the same command; ``--time-limit`` stops cleanly after the epoch that crosses it), and
writes its curve of NLL against epochs (``curve.json``, ``curve.png``; cheaper estimates: fewer
importance samples on a subset of the test or validation images) and, when the budget is done,
``result.json`` with the final 5000-sample test NLL.

    python benchmarks/reproduce.py --model vae --k 1 --dataset mnist --budget 400 --out runs/repro/vae_k1
    python benchmarks/reproduce.py --model iwae --k 5 --dataset binarized_mnist --budget 400 --out runs/repro/iwae_k5_bin
    python benchmarks/reproduce.py --speed --model iwae --k 5     # seconds per epoch, to size a budget
    python benchmarks/reproduce.py --model vae --set posterior=iaf --set num_flows=2 --budget 200 --batch-size 100

``--model`` takes any registered model with importance log-weights (``vae``, ``iwae``, ``miwae``, ``rws``,
the two-layer models, ...) and ``--set KEY=VALUE`` (YAML values, repeatable) changes its config over the
paper's architecture (a posterior, a prior, a bound's settings); the run's description records the settings.
``--kl-warmup STEPS`` anneals the KL weight from 0 to 1 over the first STEPS steps (for the families whose papers
train that way). ``--init-output-bias`` starts the decoder's output bias at the log-odds of the training mean image,
as Burda et al.'s code does (``vaezoo.training.init_output_bias``; without it the two-layer models can saturate
their tanh decoder in the first steps, see docs/results.md).

Reference: Burda, Grosse & Salakhutdinov, "Importance Weighted Autoencoders", ICLR 2016 (Table 1 and
appendix); Larochelle & Murray, AISTATS 2011 (the fixed binarization).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import vaezoo  # noqa: E402
from vaezoo import data, evaluate, fileio, runs, training  # noqa: E402

PAPER_EPOCHS = sum(3**i for i in range(8))  # 3280
#: Test NLL (nats) of Burda et al. 2016: Table 1 (dynamic binarization) and the appendix (fixed).
PAPER = {
    "mnist": {("vae", 1): 86.76, ("vae", 5): 86.47, ("vae", 50): 86.35,
              ("iwae", 1): 86.76, ("iwae", 5): 85.54, ("iwae", 50): 84.78,
              ("vae_2layer", 1): 85.33, ("iwae_2layer", 5): 83.89, ("iwae_2layer", 50): 82.90},
    "binarized_mnist": {("vae", 1): 88.71, ("iwae", 1): 88.71, ("iwae", 5): 87.63, ("iwae", 50): 87.10},
}
ARCHITECTURE = dict(architecture="mlp", hidden_units=[200, 200], latent_dim=50, activation="tanh",
                    likelihood="bernoulli", prior="normal", data_shape=[28, 28, 1])
TEST_BINARIZATION_SEED = 12345
CURVE_FILE, RESULT_FILE, BEST_FILE = "curve.json", "result.json", "best.keras"


def paper_schedule(total_steps: int) -> keras.optimizers.schedules.PiecewiseConstantDecay:
    """The paper's stage schedule squeezed into ``total_steps`` optimizer steps (stage i: 3^i / 3280 of them)."""
    cumulative = np.cumsum([3**i for i in range(8)]) / PAPER_EPOCHS
    boundaries = [max(1, int(round(total_steps * c))) for c in cumulative[:-1]]
    for i in range(1, len(boundaries)):  # strictly increasing, even for tiny budgets
        boundaries[i] = max(boundaries[i], boundaries[i - 1] + 1)
    values = [1e-3 * 10 ** (-i / 7) for i in range(8)]
    return keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)


def splits(dataset: str) -> tuple[str, str | None]:
    """The split that scores the curve and early stopping, and the validation split (None: no early stopping)."""
    return ("valid", "valid") if dataset == "binarized_mnist" else ("test", None)


def load_images(dataset: str, split: str, data_dir, limit=None) -> np.ndarray:
    """Evaluation images as one array: the fixed binarization, or MNIST binarized once with a fixed seed."""
    binarize = "dynamic" if dataset == "mnist" else "none"
    ds = data.load(dataset, split, batch_size=1000, data_dir=data_dir, binarize=binarize, shuffle=False,
                   seed=TEST_BINARIZATION_SEED, limit=limit)
    return np.concatenate([b.numpy() for b in ds])


def settings(args) -> dict:
    """The ``--set KEY=VALUE`` overrides, values parsed as YAML (``2``, ``[320, 320]``, ``iaf``)."""
    import yaml

    out = {}
    for item in args.set or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"--set takes KEY=VALUE, got {item!r}")
        out[key.strip()] = yaml.safe_load(value)
    return out


def architecture(model: str) -> dict:
    """The paper's one-layer architecture, or, for a model with several stochastic layers (``latent_dims``), its
    own (its YAML: Burda et al.'s two-layer networks) with the paper's activation, likelihood and data shape."""
    if "latent_dims" in vaezoo.model_info(model).schema:
        return {k: ARCHITECTURE[k] for k in ("activation", "likelihood", "data_shape")}
    return dict(ARCHITECTURE)


def build(args) -> keras.Model:
    return vaezoo.get(args.model, **{**architecture(args.model), **settings(args)}, num_samples=args.k, seed=args.seed)


def compile_model(model, steps_per_epoch: int, args) -> None:
    total = args.budget * steps_per_epoch
    optimizer = keras.optimizers.Adam(paper_schedule(total), beta_1=0.9, beta_2=0.999, epsilon=1e-4)
    model.compile(optimizer, jit_compile=args.jit_compile, steps_per_execution=args.steps_per_execution)


class Curve(keras.callbacks.Callback):
    """NLL against epochs: every ``every`` epochs (and the last), an importance-sampled NLL of
    ``images`` with ``num_samples`` samples, appended to ``curve.json`` (atomically; it survives a
    resume). With ``keep_best``, the model with the lowest NLL so far is saved as ``best.keras``
    (early stopping on a validation split: the best epoch is the one evaluated at the end)."""

    def __init__(self, folder: Path, images: np.ndarray, every: int, num_samples: int, budget: int,
                 split: str, keep_best: bool = False, seed: int = 0):
        super().__init__()
        self.folder, self.images, self.every, self.num_samples = Path(folder), images, every, num_samples
        self.budget, self.split, self.keep_best, self.seed = budget, split, keep_best, seed
        self.points = read_curve(self.folder)

    def on_epoch_end(self, epoch, logs=None):
        epochs_done = epoch + 1
        if epochs_done % self.every and epochs_done != self.budget:
            return
        nll = evaluate.log_likelihood(self.model, self.images, num_samples=self.num_samples, batch_size=500,
                                      seed=self.seed).nll
        self.points = [p for p in self.points if p["epoch"] < epochs_done]
        best = min([p["nll"] for p in self.points], default=math.inf)
        self.points.append({"epoch": epochs_done, "nll": round(nll, 4), "train_loss": float(logs.get("loss", "nan")),
                            "learning_rate": float(keras.ops.convert_to_numpy(
                                self.model.optimizer.learning_rate)),
                            "time": time.strftime("%Y-%m-%dT%H:%M:%S")})
        if self.keep_best and nll < best:
            with fileio.atomic_path(self.folder / BEST_FILE) as tmp:
                self.model.save(tmp)
        write_curve(self.folder, self.points, self.split, self.num_samples, len(self.images))


class TimeLimit(keras.callbacks.Callback):
    """Stop after the epoch during which ``seconds`` have passed (the run folder resumes from there)."""

    def __init__(self, seconds: float | None):
        super().__init__()
        self.seconds, self.start = seconds, time.monotonic()

    def on_epoch_end(self, epoch, logs=None):
        if self.seconds and time.monotonic() - self.start > self.seconds:
            self.model.stop_training = True


def read_curve(folder: Path) -> list[dict]:
    path = Path(folder) / CURVE_FILE
    if not path.is_file():
        return []
    try:
        return json.loads(path.read_text())["points"]
    except (ValueError, KeyError):
        return []


def write_curve(folder: Path, points, split, num_samples, examples) -> None:
    fileio.atomic_write_text(Path(folder) / CURVE_FILE, json.dumps(
        {"split": split, "importance_samples": num_samples, "examples": examples, "points": points}, indent=1))
    plot_curve(Path(folder))


def plot_curve(folder: Path, paper: float | None = None) -> Path:
    """``curve.png``: the NLL against epochs (and the paper's converged figure, if known)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curve = json.loads((folder / CURVE_FILE).read_text())
    points = curve["points"]
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    ax.plot([p["epoch"] for p in points], [p["nll"] for p in points], marker="o", markersize=3, label="vaezoo")
    state = json.loads((folder / "description.json").read_text()) if (folder / "description.json").is_file() else {}
    paper = paper or state.get("paper_nll")
    if paper:
        ax.axhline(paper, color="grey", linestyle="--", label=f"paper, converged ({paper})")
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"NLL, nats ({curve['split']}, {curve['importance_samples']} samples, {curve['examples']} images)")
    ax.set_title(state.get("title", folder.name))
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with fileio.atomic_path(folder / "curve.png") as tmp:
        fig.savefig(tmp)
    plt.close(fig)
    return folder / "curve.png"


def run(args) -> dict | None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    curve_split, valid_split = splits(args.dataset)
    description = {"model": args.model, "k": args.k, "dataset": args.dataset, "budget": args.budget,
                   "batch_size": args.batch_size, "seed": args.seed, "steps_per_execution": args.steps_per_execution,
                   "jit_compile": args.jit_compile, "architecture": architecture(args.model),
                   "paper_nll": PAPER[args.dataset].get((args.model, args.k)),
                   "title": f"{args.model} K={args.k}, {args.dataset}, budget {args.budget} epochs"}
    if settings(args):  # only when given, so the folders of earlier runs still match their description
        description["settings"] = settings(args)
        description["title"] = (f"{args.model} K={args.k} ({', '.join(f'{k}={v}' for k, v in settings(args).items())}), "
                                f"{args.dataset}, budget {args.budget} epochs")
    if args.paper_nll is not None:
        description["paper_nll"] = args.paper_nll
    if args.kl_warmup:  # only when given, as the settings
        description["kl_warmup_steps"] = args.kl_warmup
    if args.init_output_bias:
        description["init_output_bias"] = True
    with runs.open_run(out, description):
        if (out / RESULT_FILE).is_file():
            return json.loads((out / RESULT_FILE).read_text())
        keras.utils.set_random_seed(args.seed)
        binarize = "dynamic" if args.dataset == "mnist" else "none"
        train = data.load(args.dataset, "train", batch_size=args.batch_size, data_dir=args.data_dir,
                          binarize=binarize, seed=args.seed, limit=args.limit)
        steps_per_epoch = int(train.cardinality())
        model = build(args)
        if args.init_output_bias:  # a resumed run then loads its checkpoint over it
            training.init_output_bias(model, train)
        compile_model(model, steps_per_epoch, args)
        curve_images = load_images(args.dataset, curve_split, args.data_dir, limit=args.curve_examples)
        curve = Curve(out, curve_images, args.curve_every, args.curve_samples, args.budget, curve_split,
                      keep_best=valid_split is not None, seed=args.seed)
        limit = TimeLimit(args.time_limit)
        start = time.monotonic()
        model.fit(train, epochs=args.budget, verbose=args.verbose,
                  callbacks=[*training.standard_callbacks(out, run_info=description), curve, limit,
                             *([vaezoo.callbacks.KLWarmup(args.kl_warmup)] if args.kl_warmup else [])])
        state = runs.read_state(out)
        if state["epochs_done"] < args.budget:
            return None  # stopped by --time-limit: rerun the same command to go on
        final = keras.models.load_model(out / BEST_FILE) if valid_split else model
        test = load_images(args.dataset, "test", args.data_dir, limit=args.eval_examples)
        eval_start = time.monotonic()
        ll = evaluate.log_likelihood(final, test, num_samples=args.eval_samples, batch_size=100, seed=args.seed)
        best_epoch = min(curve.points, key=lambda p: p["nll"])["epoch"] if valid_split else args.budget
        result = {**description, "test_nll": round(ll.nll, 3), "test_nll_se": round(ll.standard_error, 3),
                  "eval_samples": args.eval_samples, "eval_examples": len(test), "epochs_trained": args.budget,
                  "model_epoch": best_epoch, "eval_seconds": round(time.monotonic() - eval_start, 1),
                  "last_session_train_seconds": round(eval_start - start, 1)}
        fileio.atomic_write_text(out / RESULT_FILE, json.dumps(result, indent=1))
        return result


def speed(args) -> dict:
    """Seconds per epoch of this model at these settings: one warm-up epoch, then ``--speed-epochs``."""
    binarize = "dynamic" if args.dataset == "mnist" else "none"
    train = data.load(args.dataset, "train", batch_size=args.batch_size, data_dir=args.data_dir, binarize=binarize,
                      seed=args.seed, limit=args.limit)
    model = build(args)
    compile_model(model, int(train.cardinality()), args)
    model.fit(train, epochs=1, verbose=0)
    start = time.perf_counter()
    model.fit(train, epochs=args.speed_epochs, verbose=0)
    seconds = (time.perf_counter() - start) / args.speed_epochs
    return {"model": args.model, "k": args.k, "settings": settings(args), "batch_size": args.batch_size,
            "dataset": args.dataset,
            "seconds_per_epoch": round(seconds, 2), "epochs_per_hour": round(3600 / seconds, 1)}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="vae", help="a registered model with importance log-weights")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="a config value over the paper's "
                   "architecture (YAML; repeatable)")
    p.add_argument("--kl-warmup", type=int, default=0, metavar="STEPS", help="anneal the KL weight from 0 to 1 over "
                   "this many steps (vaezoo.callbacks.KLWarmup; the VampPrior and ladder papers' warm-up)")
    p.add_argument("--init-output-bias", action="store_true", help="start the decoder's output bias at the "
                   "log-odds of the training data's mean image, as Burda et al.'s code does "
                   "(vaezoo.training.init_output_bias)")
    p.add_argument("--paper-nll", type=float, help="the paper's converged NLL for the curve (default: Burda et al.'s "
                   "for vae / iwae)")
    p.add_argument("--k", type=int, default=1, help="samples per example in the training bound")
    p.add_argument("--dataset", choices=["mnist", "binarized_mnist"], default="mnist")
    p.add_argument("--budget", type=int, default=PAPER_EPOCHS, help=f"epochs (the paper: {PAPER_EPOCHS})")
    p.add_argument("--batch-size", type=int, default=20, help="the paper: 20")
    p.add_argument("--steps-per-execution", default="auto", type=lambda v: v if v == "auto" else int(v))
    p.add_argument("--jit-compile", default="auto", type=lambda v: {"true": True, "false": False}.get(v, v))
    p.add_argument("--out", help="run folder (rerun the same command to resume)")
    p.add_argument("--data-dir", default=os.environ.get(data.DATA_DIR_ENV, "../shared/data"))
    p.add_argument("--limit", type=int, help="train on a fixed random subset of N images (tests)")
    p.add_argument("--curve-every", type=int, default=10, help="epochs between points of the curve")
    p.add_argument("--curve-samples", type=int, default=100, help="importance samples per image on the curve")
    p.add_argument("--curve-examples", type=int, default=2000, help="images scored on the curve")
    p.add_argument("--eval-samples", type=int, default=5000)
    p.add_argument("--eval-examples", type=int, default=None, help="test images for the final NLL (default all)")
    p.add_argument("--time-limit", type=float, help="stop after the epoch that crosses this many seconds")
    p.add_argument("--speed", action="store_true", help="only measure seconds per epoch")
    p.add_argument("--speed-epochs", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--verbose", type=int, default=0)
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    if args.speed:
        print(json.dumps(speed(args)))
        return 0
    if not args.out:
        args.out = f"runs/reproduce/{args.model}_k{args.k}_{args.dataset}_b{args.budget}"
    try:
        result = run(args)
    except runs.RunError as exc:  # the folder is in use or holds other settings: one line, no traceback
        raise SystemExit(str(exc)) from None
    if result is None:
        print(f"stopped at the time limit; rerun the same command to resume {args.out}")
        return 0
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
