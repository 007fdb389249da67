"""The disentanglement study: does beta > 1 (or a total-correlation penalty) raise MIG, DCI, ... here?

Trains each model of :data:`STUDY` on vaezoo's 64x64 sprite grid (``sprites_grid``: 3 shapes x 6
scales x 40 orientations x 32 x 32 positions, 10,000 grid images held out) with disentanglement_lib's
architecture and optimizer (4 conv layers 32-32-64-64, dense 256, 10 latents, Bernoulli; Adam 1e-4,
batch 64), the same number of optimizer steps for all, several seeds each; then scores every run:

* the test split's reconstruction (nats), KL and ELBO (``model.evaluate``);
* MIG, SAP, DCI (disentanglement, completeness, informativeness) and modularity of the posterior
  means of ``--metric-examples`` grid images, and the beta-VAE and FactorVAE scores from
  ``--score-points`` training points (half as many evaluation points) of 64 examples each
  (:func:`vaezoo.disentanglement.evaluate`; Locatello et al. 2019 use 10,000 and 5,000);
* a latent traversal grid (one row per latent, -3..3 around the posterior mean of a test image).

Every run is a vaezoo run folder (checkpoints every ``--chunk`` steps, resume by rerunning the same
command; a resumed run draws its data from a seed shifted by the steps done); ``result.json`` is
written when a run is scored. ``--report`` gathers the folder into ``summary.json`` and prints a
markdown table of each metric's median and range over seeds, and a second one of each model against the
VAE run with the same seed (on how many seeds it scored higher, and the median difference).

    python benchmarks/disentanglement.py --speed                         # seconds per 100 steps
    python benchmarks/disentanglement.py --steps 6000 --seeds 0 1 2 --out runs/disentanglement
    python benchmarks/disentanglement.py --report runs/disentanglement
    python benchmarks/disentanglement.py --out runs/disentanglement --collect docs/disentanglement/runs

References: Locatello et al., "Challenging Common Assumptions in the Unsupervised Learning of
Disentangled Representations", ICML 2019 (the study design, architecture and metrics); the papers of
each model (see their modules).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

import vaezoo  # noqa: E402
from vaezoo import data, disentanglement, fileio, images, runs, training  # noqa: E402

#: name -> (registered model, overrides). Values from the middle of disentanglement_lib's sweeps.
STUDY = {
    "vae": ("beta_vae_conv64", {"beta": 1.0}),
    "beta_vae_4": ("beta_vae_conv64", {"beta": 4.0}),
    "beta_vae_16": ("beta_vae_conv64", {"beta": 16.0}),
    # Burgess et al. 2018: C rises to 25 nats over the first third of the steps, gamma 1000.
    "annealed_vae": ("beta_vae_conv64", {"beta": 1.0, "capacity_max": 25.0, "gamma": 1000.0}),
    "beta_tcvae": ("beta_tcvae", {"beta": 6.0}),
    "factor_vae": ("factor_vae", {"gamma": 35.0}),
    "dip_vae_i": ("dip_vae", {"dip_type": "i", "lambda_od": 10.0, "lambda_d": 100.0}),
}
METRICS = ("mig", "sap", "dci", "modularity", "beta_vae_score", "factor_vae_score")
BATCH_SIZE, LEARNING_RATE = 64, 1e-4
RESULT_FILE = "result.json"


def overrides(name: str, steps: int, tiny: bool = False) -> tuple[str, dict]:
    registered, extra = STUDY[name]
    extra = dict(extra)
    if "capacity_max" in extra:
        extra["capacity_steps"] = max(1, steps // 3)
    if tiny:  # tests: a small network
        extra.update(conv_filters=[8, 8], hidden_units=[16])
        if registered == "factor_vae":
            extra["discriminator_units"] = [16]
    return registered, extra


def build(name: str, steps: int, seed: int, tiny: bool = False) -> keras.Model:
    registered, extra = overrides(name, steps, tiny)
    model = vaezoo.get(registered, seed=seed, **extra)
    model.compile(keras.optimizers.Adam(LEARNING_RATE))
    return model


def train_and_score(name: str, seed: int, args) -> dict | None:
    """Train (or resume) one run and score it; None if stopped by ``--time-limit`` before the end."""
    folder = Path(args.out) / name / f"seed{seed}"
    folder.mkdir(parents=True, exist_ok=True)
    registered, extra = overrides(name, args.steps, args.tiny)
    description = {"study": name, "model": registered, "overrides": extra, "steps": args.steps, "chunk": args.chunk,
                   "batch_size": BATCH_SIZE, "learning_rate": LEARNING_RATE, "seed": seed, "limit": args.limit}
    scoring = {"eval_examples": args.eval_examples, "metric_examples": args.metric_examples,
               "score_points": args.score_points}
    with runs.open_run(folder, description):  # the training settings; other scoring settings only re-score
        previous = json.loads((folder / RESULT_FILE).read_text()) if (folder / RESULT_FILE).is_file() else None
        if previous is not None and previous.get("scoring") == scoring:
            return previous
        keras.utils.set_random_seed(seed)
        model = build(name, args.steps, seed, args.tiny)
        epochs = math.ceil(args.steps / args.chunk)
        done = runs.read_state(folder)["epochs_done"] if (folder / "state.json").is_file() else 0
        train = data.load("sprites_grid", batch_size=BATCH_SIZE, seed=seed * 100_003 + done, limit=args.limit).repeat()
        start = time.monotonic()
        model.fit(train, epochs=epochs, steps_per_epoch=args.chunk, verbose=args.verbose,
                  callbacks=[*training.standard_callbacks(folder, run_info=description), TimeLimit(args.deadline)])
        if runs.read_state(folder)["epochs_done"] < epochs:
            return None
        train_seconds = round(time.monotonic() - start, 1) if previous is None else previous["last_session_train_seconds"]
        result = {**description, "scoring": scoring, **score(model, seed, args, folder),
                  "last_session_train_seconds": train_seconds}
        fileio.atomic_write_text(folder / RESULT_FILE, json.dumps(result, indent=1))
        return result


def score(model, seed: int, args, folder: Path) -> dict:
    start = time.monotonic()
    test = data.load("sprites_grid", split="test", batch_size=500, limit=args.eval_examples)
    logs = model.evaluate(test, verbose=0, return_dict=True)
    grid = data.SpriteGrid(64)
    metrics = disentanglement.evaluate(disentanglement.posterior_means(model), grid, METRICS,
                                       num_examples=args.metric_examples, seed=seed,
                                       num_train=args.score_points, num_eval=max(1, args.score_points // 2),
                                       n_jobs=-1)
    example = grid.images(grid.factors_of(grid.split_indices("test")[:1]))
    traversal = model.traverse(example, steps=9)
    images.save_grid(traversal.reshape(-1, *traversal.shape[2:]), folder / "traversal.png", ncols=9)
    return {"test": {k: round(float(logs[k]), 3) for k in ("reconstruction", "kl", "elbo")},
            "metrics": {k: round(float(v), 4) for k, v in metrics.items()},
            "score_seconds": round(time.monotonic() - start, 1)}


class TimeLimit(keras.callbacks.Callback):
    """Stop after the checkpoint unit that crosses ``deadline`` (``time.monotonic()``; None: never)."""

    def __init__(self, deadline: float | None):
        super().__init__()
        self.deadline = deadline

    def on_epoch_end(self, epoch, logs=None):
        if self.deadline is not None and time.monotonic() > self.deadline:
            self.model.stop_training = True


def speed(args) -> dict:
    """Seconds per 100 optimizer steps of each model of the study (after a warm-up chunk)."""
    out = {}
    train = data.load("sprites_grid", batch_size=BATCH_SIZE, seed=0, limit=args.limit).repeat()
    for name in args.models:
        model = build(name, args.steps, 0, args.tiny)
        model.fit(train, epochs=1, steps_per_epoch=args.speed_steps, verbose=0)
        begin = time.perf_counter()
        model.fit(train, epochs=1, steps_per_epoch=args.speed_steps, verbose=0)
        out[name] = round(100 * (time.perf_counter() - begin) / args.speed_steps, 2)
    return {"seconds_per_100_steps": out, "batch_size": BATCH_SIZE}


def report(folder: Path) -> dict:
    """Gather every ``result.json`` under ``folder``: per model, each number's median, min, max and seeds."""
    rows: dict[str, list[dict]] = {}
    for path in sorted(folder.glob(f"*/seed*/{RESULT_FILE}")):
        result = json.loads(path.read_text())
        rows.setdefault(result["study"], []).append(result)
    summary = {}
    for name in [n for n in STUDY if n in rows]:
        results = rows[name]
        numbers = {f"test_{k}": [r["test"][k] for r in results] for k in ("reconstruction", "kl")}
        numbers.update({k: [r["metrics"][k] for r in results] for k in results[0]["metrics"]})
        summary[name] = {"seeds": [r["seed"] for r in results], "steps": results[0]["steps"],
                         **{k: {"median": statistics.median(v), "min": min(v), "max": max(v)} for k, v in numbers.items()}}
        if name != BASELINE and BASELINE in rows:
            summary[name]["against_" + BASELINE] = paired(results, rows[BASELINE])
    fileio.atomic_write_text(folder / "summary.json", json.dumps(summary, indent=1))
    return summary


#: The model every other one is compared with, seed by seed.
BASELINE = "vae"
PAIRED = ("mig", "sap", "dci_disentanglement", "dci_completeness", "modularity", "beta_vae_score", "factor_vae_score")


def paired(results: list[dict], baseline: list[dict]) -> dict:
    """Each metric of :data:`PAIRED` against the baseline's run with the same seed (the seed fixes the initial
    weights and the data order of both): on how many shared seeds the model scored higher, and the median of
    its differences. Seeds that only one of the two has are left out."""
    base = {r["seed"]: r["metrics"] for r in baseline}
    shared = [r for r in results if r["seed"] in base]
    out = {}
    for k in PAIRED:
        diffs = [r["metrics"][k] - base[r["seed"]][k] for r in shared if k in r["metrics"] and k in base[r["seed"]]]
        if diffs:
            out[k] = {"above": sum(d > 0 for d in diffs), "seeds": len(diffs),
                      "median_difference": statistics.median(diffs)}
    return out


#: What :func:`collect` keeps of a scored run: small files (no checkpoints).
RECORD_FILES = ("description.json", RESULT_FILE, "history.csv", "traversal.png")


def collect(folder: Path, dest: Path) -> list[Path]:
    """Copy the record of every scored run in ``folder`` (:data:`RECORD_FILES`) to ``dest/<model>/seed<k>/``.

    ``dest`` is what gets committed: ``--report dest`` summarises it, and a copy of it as ``--out`` lets a
    later session go on with the runs that are missing (scored runs are read back, not trained again).
    """
    copied = []
    for result in sorted(folder.glob(f"*/seed*/{RESULT_FILE}")):
        run = result.parent
        target = dest / run.parent.name / run.name
        target.mkdir(parents=True, exist_ok=True)
        for name in RECORD_FILES:
            if (run / name).is_file():
                shutil.copy2(run / name, target / name)
        copied.append(target)
    return copied


def markdown(summary: dict) -> str:
    columns = ["test_reconstruction", "test_kl", "mig", "sap", "dci_disentanglement", "dci_completeness",
               "dci_informativeness_test", "modularity", "beta_vae_score", "factor_vae_score"]
    lines = ["| model | seeds | " + " | ".join(columns) + " |", "|" + " --- |" * (len(columns) + 2)]
    for name, row in summary.items():
        cells = []
        for c in columns:
            if c not in row:
                cells.append("-")
                continue
            v = row[c]
            digits = 1 if c.startswith("test_") else 2
            cell = f"{v['median']:.{digits}f}"
            cells.append(cell if len(row["seeds"]) == 1 else f"{cell} ({v['min']:.{digits}f}-{v['max']:.{digits}f})")
        lines.append(f"| {name} | {len(row['seeds'])} | " + " | ".join(cells) + " |")
    pairs = {name: row["against_" + BASELINE] for name, row in summary.items() if row.get("against_" + BASELINE)}
    if pairs:
        lines += ["", f"Against the {BASELINE} at the same seed: seeds on which the model scored higher / shared seeds "
                  "(median difference)", "",
                  "| model | " + " | ".join(PAIRED) + " |", "|" + " --- |" * (len(PAIRED) + 1)]
        for name, row in pairs.items():
            cells = [f"{row[k]['above']}/{row[k]['seeds']} ({row[k]['median_difference']:+.2f})" if k in row else "-"
                     for k in PAIRED]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", choices=list(STUDY), default=list(STUDY))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=6000, help="optimizer steps of every run (batch 64)")
    p.add_argument("--chunk", type=int, default=500, help="steps between checkpoints")
    p.add_argument("--out", default="runs/disentanglement")
    p.add_argument("--limit", type=int, help="train on a fixed random subset of N grid images (tests)")
    p.add_argument("--eval-examples", type=int, default=None, help="test images for the reconstruction (default 10,000)")
    p.add_argument("--metric-examples", type=int, default=10_000)
    p.add_argument("--score-points", type=int, default=1000, help="training points of the beta-VAE/FactorVAE scores")
    p.add_argument("--time-limit", type=float, help="stop after the chunk that crosses this many seconds")
    p.add_argument("--speed", action="store_true", help="only measure seconds per 100 steps")
    p.add_argument("--speed-steps", type=int, default=100)
    p.add_argument("--report", metavar="FOLDER", help="summarise the runs in FOLDER")
    p.add_argument("--collect", metavar="DEST", help="copy the record of every scored run of --out to DEST (no checkpoints)")
    p.add_argument("--tiny", action="store_true", help="small networks (tests)")
    p.add_argument("--verbose", type=int, default=0)
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    if args.report:
        print(markdown(report(Path(args.report))))
        return 0
    if args.speed:
        print(json.dumps(speed(args)))
        return 0
    if args.collect:
        copied = collect(Path(args.out), Path(args.collect))
        print(f"copied {len(copied)} scored runs to {args.collect}")
        return 0
    args.deadline = None if args.time_limit is None else time.monotonic() + args.time_limit
    trained = False  # the first run always trains at least one chunk
    for name in args.models:
        for seed in args.seeds:
            result = None
            if not trained or args.deadline is None or time.monotonic() < args.deadline:
                try:
                    result, trained = train_and_score(name, seed, args), True
                except runs.RunError as exc:  # the folder is in use or holds other settings: one line
                    raise SystemExit(str(exc)) from None
            if result is None:
                print(f"stopped at the time limit; rerun the same command to resume {args.out}")
                return 0
            print(json.dumps({"study": name, "seed": seed, "test": result["test"], "metrics": result["metrics"]}),
                  flush=True)
    print(markdown(report(Path(args.out))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
