"""M2 on MNIST with 100 labels: the test classification error of Kingma et al. 2014 (M2 alone: 11.97%).

Trains ``m2`` (zoo_configs/m2.yaml: the paper's MLPs, one hidden layer of 500 softplus units, 50 latents, Adam
3e-4) on dynamically binarized MNIST where ``--num-labels`` training images (the same number per class, drawn with
``--label-seed``) keep their label and the rest are unlabelled (``vaezoo.data.semi_supervised``: each batch is
``--batch-size`` unlabelled images beside a tenth as many labelled ones). After every ``--curve-every`` epochs the
error of argmax q(y|x) on all 10,000 test images goes into ``curve.json`` / ``curve.png``; at the end
``result.json`` holds the final test error, the error on the labelled training images, an importance-sampled test
NLL (``--eval-samples`` samples on ``--eval-examples`` test images, binarized once with seed 12345), the time,
and ``samples.png`` one row of samples per class. The run folder is crash-safe: rerun the same command to resume
(``--time-limit`` stops cleanly after the epoch that crosses it).

    python benchmarks/semi_supervised.py --epochs 100 --out runs/m2_100
    python benchmarks/semi_supervised.py --speed          # seconds per epoch, to size a run

Reference: Kingma, Rezende, Mohamed & Welling, "Semi-Supervised Learning with Deep Generative Models",
NeurIPS 2014, Table 1 (MNIST, 100 labels: M2 11.97% +- 1.71, M1+M2 3.33% +- 0.14).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import vaezoo  # noqa: E402
from vaezoo import data, evaluate, fileio, runs, training  # noqa: E402
from vaezoo import images as zimages  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reproduce import TEST_BINARIZATION_SEED, TimeLimit, settings  # noqa: E402

PAPER_ERROR = {100: 11.97, 600: 4.94, 1000: 3.60, 3000: 3.92}  # Kingma et al. 2014, Table 1, M2 (percent)
CURVE_FILE, RESULT_FILE = "curve.json", "result.json"


def test_set(data_dir, limit=None):
    ds = data.load("mnist", "test", batch_size=1000, data_dir=data_dir, binarize="dynamic", shuffle=False,
                   seed=TEST_BINARIZATION_SEED, limit=limit, labels=True)
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in ds])
    return np.concatenate(xs), np.concatenate(ys)


def error(model, x, y, batch_size=1000) -> float:
    """Percent of images whose most probable class under q(y|x) is not their label."""
    guess = np.concatenate([np.argmax(model.classify(x[i:i + batch_size]), axis=-1)
                            for i in range(0, len(x), batch_size)])
    return float(100.0 * np.mean(guess != y))


class ErrorCurve(keras.callbacks.Callback):
    """The test error every ``every`` epochs (and the last), appended to ``curve.json`` (survives a resume)."""

    def __init__(self, folder: Path, x, y, every: int, epochs: int):
        super().__init__()
        self.folder, self.x, self.y, self.every, self.epochs = Path(folder), x, y, every, epochs
        path = self.folder / CURVE_FILE
        self.points = json.loads(path.read_text())["points"] if path.is_file() else []

    def on_epoch_end(self, epoch, logs=None):
        done = epoch + 1
        if done % self.every and done != self.epochs:
            return
        self.points = [p for p in self.points if p["epoch"] < done]
        self.points.append({"epoch": done, "test_error": round(error(self.model, self.x, self.y), 3),
                            **{k: round(float(v), 4) for k, v in (logs or {}).items()},
                            "time": time.strftime("%Y-%m-%dT%H:%M:%S")})
        fileio.atomic_write_text(self.folder / CURVE_FILE, json.dumps({"points": self.points}, indent=1))
        plot(self.folder)


def plot(folder: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = json.loads((folder / CURVE_FILE).read_text())["points"]
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    ax.plot([p["epoch"] for p in points], [p["test_error"] for p in points], marker="o", markersize=3, label="vaezoo m2")
    description = json.loads((folder / "description.json").read_text())
    paper = PAPER_ERROR.get(description["num_labels"])
    if paper:
        ax.axhline(paper, color="grey", linestyle="--", label=f"Kingma et al. 2014, M2 ({paper}%)")
    ax.set_xlabel("epoch")
    ax.set_ylabel("test error, % (10,000 images)")
    ax.set_title(f"m2, MNIST, {description['num_labels']} labels")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with fileio.atomic_path(folder / "curve.png") as tmp:
        fig.savefig(tmp)
    plt.close(fig)


def run(args) -> dict | None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    description = {"model": "m2", "num_labels": args.num_labels, "label_seed": args.label_seed,
                   "epochs": args.epochs, "batch_size": args.batch_size, "seed": args.seed,
                   "settings": dict(settings(args)), "paper_error": PAPER_ERROR.get(args.num_labels)}
    with runs.open_run(out, description):
        if (out / RESULT_FILE).is_file():
            return json.loads((out / RESULT_FILE).read_text())
        keras.utils.set_random_seed(args.seed)
        train = data.semi_supervised("mnist", args.num_labels, batch_size=args.batch_size, seed=args.seed,
                                     data_dir=args.data_dir, label_seed=args.label_seed)
        model = vaezoo.get("m2", num_labels=args.num_labels, seed=args.seed, **settings(args))
        model.compile(keras.optimizers.Adam(model_config(args)["learning_rate"]))
        x_test, y_test = test_set(args.data_dir, limit=args.test_limit)
        start = time.monotonic()
        model.fit(train, epochs=args.epochs, verbose=args.verbose,
                  callbacks=[*training.standard_callbacks(out, run_info=description),
                             ErrorCurve(out, x_test, y_test, args.curve_every, args.epochs), TimeLimit(args.time_limit)])
        if runs.read_state(out)["epochs_done"] < args.epochs:
            return None  # stopped by --time-limit: rerun the same command to go on
        train_seconds = time.monotonic() - start
        labelled = train.labelled_indices
        x_l, y_l = labelled_images(args, labelled)
        eval_start = time.monotonic()
        ll = evaluate.log_likelihood(model, x_test[:args.eval_examples], num_samples=args.eval_samples,
                                     batch_size=100, seed=args.seed)
        grid = model.class_grid(per_class=10, seed=args.seed)
        zimages.save_grid(grid.reshape(-1, *grid.shape[2:]), out / "samples.png", ncols=10)
        result = {**description, "test_error": round(error(model, x_test, y_test), 3),
                  "labelled_train_error": round(error(model, x_l, y_l), 3), "test_examples": len(x_test),
                  "test_nll": round(ll.nll, 3), "test_nll_se": round(ll.standard_error, 3),
                  "eval_samples": args.eval_samples, "eval_examples": min(args.eval_examples, len(x_test)),
                  "last_session_train_seconds": round(train_seconds, 1),
                  "eval_seconds": round(time.monotonic() - eval_start, 1)}
        fileio.atomic_write_text(out / RESULT_FILE, json.dumps(result, indent=1))
        return result


def labelled_images(args, indices):
    """The labelled training images (the train split in order, binarized once) and their labels."""
    ds = data.load("mnist", "train", batch_size=1000, data_dir=args.data_dir, binarize="dynamic", shuffle=False,
                   seed=TEST_BINARIZATION_SEED, labels=True)
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in ds])
    x, y = np.concatenate(xs), np.concatenate(ys)
    return x[indices], y[indices]


def model_config(args) -> dict:
    return vaezoo.get_config("m2", **settings(args))


def speed(args) -> dict:
    train = data.semi_supervised("mnist", args.num_labels, batch_size=args.batch_size, seed=args.seed,
                                 data_dir=args.data_dir)
    model = vaezoo.get("m2", **settings(args))
    model.compile(keras.optimizers.Adam(1e-4))
    model.fit(train.take(20), epochs=1, verbose=0)
    steps = int(train.cardinality())
    begin = time.perf_counter()
    model.fit(train.take(args.speed_steps), epochs=1, verbose=0)
    seconds = (time.perf_counter() - begin) / args.speed_steps * steps
    return {"model": "m2", "settings": settings(args), "batch_size": args.batch_size, "steps_per_epoch": steps,
            "seconds_per_epoch": round(seconds, 2)}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--num-labels", type=int, default=100)
    p.add_argument("--label-seed", type=int, default=0, help="which training images keep their label")
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=100, help="unlabelled images per batch (plus a tenth labelled)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="a config value of m2 (YAML; repeatable)")
    p.add_argument("--curve-every", type=int, default=5)
    p.add_argument("--eval-samples", type=int, default=1000)
    p.add_argument("--eval-examples", type=int, default=10000)
    p.add_argument("--test-limit", type=int, help="a fixed random subset of the test images (tests)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/m2_100")
    p.add_argument("--data-dir", default=os.environ.get(data.DATA_DIR_ENV, "../shared/data"))
    p.add_argument("--time-limit", type=float, help="seconds: stop cleanly after the epoch that crosses it")
    p.add_argument("--verbose", type=int, default=2)
    p.add_argument("--speed", action="store_true", help="measure seconds per epoch instead of training")
    p.add_argument("--speed-steps", type=int, default=60)
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    if args.speed:
        print(json.dumps(speed(args)))
        return 0
    result = run(args)
    if result is None:
        print(f"stopped at the time limit; rerun the same command to resume ({args.out})")
        return 0
    print(json.dumps({k: result[k] for k in ("test_error", "labelled_train_error", "test_nll", "paper_error")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
