"""The richer-inference table: flow posteriors, VampPrior and flow priors, the IWAE family's bounds and
estimators, each at one equal budget beside the VAE and the IWAE, on Burda et al.'s setting.

Every row is a run of the reproduction harness (``benchmarks/reproduce.py``: 784-200-200-50 tanh MLPs,
Bernoulli likelihood, Adam epsilon 1e-4 with Burda et al.'s stage schedule squeezed into the budget, dynamically
binarized MNIST, test NLL from 5000 importance samples on all 10,000 test images binarized once with seed 12345),
with the row's posterior, prior or bound set over that architecture (``--set``); the two-layer rows use Burda et
al.'s two-layer architecture (x -> 200-200 -> z1 (100) -> 100-100 -> z2 (50), tanh), and the ladder row the same
networks with top-down inference and a KL warm-up over the first 10% of the steps (18,000 at 300 epochs). Only the inference changes
between rows: the same networks, data, batch (100), budget (``--budget`` epochs) and seed.

The runs go one after another (one heavy job at a time), each a crash-safe run folder: rerun the same command
to resume (``--time-limit`` stops cleanly after the epoch that crosses it, for a session's end). ``--report``
collects the finished rows into ``summary.json`` and ``table.md`` (and copies each run's records) under
``--docs``.

    python benchmarks/inference_table.py --budget 300 --out runs/inference --time-limit 7200
    python benchmarks/inference_table.py --budget 300 --out runs/inference --report --docs docs/inference

References (the paper column): Burda et al. 2016 (Table 1, dynamic MNIST); Kingma et al. 2016 (IAF);
Rezende & Mohamed 2015 (planar/radial); Tomczak & Welling 2018 (VampPrior, Table 2); Papamakarios et al.
2017 (MAF); Tucker et al. 2019 (DReG); Bornschein & Bengio 2015 (RWS); Rainforth et al. 2018 (MIWAE, CIWAE,
PIWAE); pythae's benchmark (Chadebec et al. 2022) where it is the only MNIST figure.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

#: run -> (model, K, settings, paper figure or None, where the figure comes from). The order is the order of
#: training: the baselines first, then the rows that differ from them by one thing.
ROWS = {
    "vae": ("vae", 1, {}, 86.76, "Burda et al. 2016, T1 (VAE, 1 layer)"),
    "iwae_k5": ("iwae", 5, {}, 85.54, "Burda et al. 2016, T1 (IWAE K=5, 1 layer)"),
    "vae_vamp": ("vae", 1, {"prior": "vamp", "num_pseudo_inputs": 500}, 85.57,
                 "Tomczak & Welling 2018, T2 (static MNIST, 1 layer; their standard prior: 88.56)"),
    "vae_warmup": ("vae", 1, {}, None, "the VAE with the VampPrior row's KL warm-up (its reference)"),
    "vae_iaf": ("vae", 1, {"posterior": "iaf", "num_flows": 2, "flow_hidden_units": [320, 320]}, None,
                "Kingma et al. 2016, Table 2: a conv ResNet VAE, not this MLP"),
    "vae_2layer": ("vae_2layer", 1, {}, 85.33, "Burda et al. 2016, T1 (VAE, 2 layers); without their output-bias init"),
    "vae_bias": ("vae", 1, {}, 86.76, "the VAE with Burda et al.'s output-bias init (the two-layer rows' reference)"),
    "vae_2layer_bias": ("vae_2layer", 1, {}, 85.33, "Burda et al. 2016, T1 (VAE, 2 layers)"),
    "iwae_2layer_k5": ("iwae_2layer", 5, {}, 83.89, "Burda et al. 2016, T1 (IWAE K=5, 2 layers)"),
    "ladder_2layer": ("ladder_vae", 1, {"latent_dims": [100, 50], "hidden_units": [[200, 200], [100, 100]],
                                        "activation": "tanh", "warmup_steps": 18000}, None,
                      "Sonderby et al. 2016, Table 1: 5 layers with batch norm, not this network"),
    "ladder_vamp_2layer": ("ladder_vae", 1, {"latent_dims": [100, 50], "hidden_units": [[200, 200], [100, 100]],
                                             "activation": "tanh", "warmup_steps": 18000, "prior": "vamp",
                                             "num_pseudo_inputs": 500}, 83.19,
                           "Tomczak & Welling 2018, T2 (HVAE + VampPrior, static MNIST; their standard prior: 86.05)"),
    "iwae_dreg_k5": ("iwae", 5, {"gradient_estimator": "dreg"}, None,
                     "Tucker et al. 2019 report training curves (DReG above IWAE), no table at K=5"),
    "vae_planar": ("vae", 1, {"posterior": "planar", "num_flows": 10}, None,
                   "Rezende & Mohamed 2015, Table 2: static MNIST, a maxout MLP, not this network"),
    "vae_radial": ("vae", 1, {"posterior": "radial", "num_flows": 10}, None,
                   "Rezende & Mohamed 2015 show radial flows on toy densities only"),
    "vae_flow_prior": ("vae", 1, {"prior": "flow", "prior_flows": 2, "flow_hidden_units": [320, 320]}, None,
                       "no MNIST VAE figure with a MAF prior in the papers"),
    "rws_k5": ("rws", 5, {}, None, "Bornschein & Bengio 2015: sigmoid belief networks, not this model"),
    "rws_dreg_k5": ("rws", 5, {"gradient_estimator": "dreg"}, None, "Tucker et al. 2019 (curves only)"),
    "iwae_k8": ("iwae", 8, {}, None, "the IWAE of the same total samples as the rows below"),
    "miwae_m2_k4": ("miwae", 4, {"num_groups": 2}, 85.09, "pythae's benchmark (its own budget and sizes)"),
    "ciwae_k8": ("ciwae", 8, {"beta": 0.5}, 84.74, "pythae's benchmark"),
    "piwae_m2_k4": ("piwae", 4, {"num_groups": 2}, 84.58, "pythae's benchmark"),
    # The most expensive rows last (about 10x the K = 5 rows' time per epoch).
    "iwae_k50": ("iwae", 50, {}, 84.78, "Burda et al. 2016, T1 (IWAE K=50, 1 layer)"),
    "iwae_2layer_k50": ("iwae_2layer", 50, {}, 82.90, "Burda et al. 2016, T1 (IWAE K=50, 2 layers)"),
}


#: KL warm-up, as a fraction of the row's steps, for the rows whose papers train with one: the VampPrior (Tomczak &
#: Welling: 100 epochs); ``vae_warmup`` is the VAE with the same warm-up, their reference. (The ladder rows warm
#: up inside the model, ``warmup_steps``, the same 10% at 300 epochs.)
WARMUP_FRACTION = {"vae_vamp": 0.1, "vae_warmup": 0.1}


#: Rows whose decoder output bias starts at the log-odds of the training mean image, as Burda et al.'s code does
#: (``reproduce.py --init-output-bias``): the two-layer rows, which without it saturate their tanh decoder in the
#: first steps (the ladder collapsed; docs/results.md), and ``vae_bias``, the one-layer VAE with it, their reference.
INIT_OUTPUT_BIAS = {"vae_bias", "vae_2layer_bias", "iwae_2layer_k5", "iwae_2layer_k50", "ladder_2layer",
                    "ladder_vamp_2layer"}


def reference_row(name: str) -> str:
    """The VAE a row is compared with: the one trained the same way (``vae_bias`` for the rows with the
    output-bias init, else ``vae``)."""
    return "vae_bias" if name in INIT_OUTPUT_BIAS else "vae"


def command(name: str, args) -> list[str]:
    model, k, settings, paper, _ = ROWS[name]
    cmd = [sys.executable, str(HERE / "reproduce.py"), "--model", model, "--k", str(k), "--dataset", "mnist",
           "--budget", str(args.budget), "--batch-size", str(args.batch_size), "--curve-every", str(args.curve_every),
           "--out", str(Path(args.out) / name), "--data-dir", args.data_dir, "--seed", str(args.seed),
           "--eval-samples", str(args.eval_samples)]
    for key, value in settings.items():
        cmd += ["--set", f"{key}={json.dumps(value)}"]
    if paper is not None:
        cmd += ["--paper-nll", str(paper)]
    if name in WARMUP_FRACTION:
        steps_per_epoch = -(-(args.limit or 60000) // args.batch_size)
        cmd += ["--kl-warmup", str(max(1, int(WARMUP_FRACTION[name] * args.budget * steps_per_epoch)))]
    if name in INIT_OUTPUT_BIAS:
        cmd += ["--init-output-bias"]
    if args.limit:
        cmd += ["--limit", str(args.limit), "--curve-examples", str(args.limit), "--eval-examples", str(args.limit)]
    return cmd


def train(args) -> int:
    start = time.monotonic()
    for name in args.runs or ROWS:
        if (Path(args.out) / name / "result.json").is_file():
            continue
        cmd = command(name, args)
        if args.time_limit:
            left = args.time_limit - (time.monotonic() - start)
            if left <= 0:
                print(f"time limit reached before {name}; rerun the same command to go on")
                return 0
            cmd += ["--time-limit", str(left)]
        print(f"[{time.strftime('%H:%M:%S')}] {name}: {' '.join(cmd[1:])}", flush=True)
        done = subprocess.run(cmd, check=False)
        if done.returncode:
            print(f"{name} failed (exit {done.returncode})")
            return done.returncode
        if not (Path(args.out) / name / "result.json").is_file():
            print(f"{name} stopped at the time limit; rerun the same command to resume")
            return 0
    return 0


def report(args) -> dict:
    docs = Path(args.docs)
    docs.mkdir(parents=True, exist_ok=True)
    rows = []
    for name, (model, k, settings, paper, source) in ROWS.items():
        folder = Path(args.out) / name
        target = docs / name
        if not (folder / "result.json").is_file():
            # A row finished in an earlier session keeps its published records: runs do not outlive a machine.
            if not (target / "result.json").is_file():
                continue
            folder = target
        result = json.loads((folder / "result.json").read_text())
        curve = json.loads((folder / "curve.json").read_text())
        if folder != target:
            target.mkdir(exist_ok=True)
            for file in ("result.json", "description.json", "curve.json", "curve.png", "history.csv"):
                if (folder / file).is_file():
                    shutil.copy(folder / file, target / file)
        rows.append({"run": name, "model": model, "k": k, "settings": settings, "paper": paper, "paper_source": source,
                     "test_nll": result["test_nll"], "test_nll_se": result["test_nll_se"],
                     "train_seconds": result["last_session_train_seconds"], "eval_seconds": result["eval_seconds"],
                     "last_curve_nll": curve["points"][-1]["nll"], "budget": result["budget"],
                     "batch_size": result["batch_size"]})
    by_name = {r["run"]: r for r in rows}
    lines = [f"| run | model | vaezoo test NLL | paper (converged) | VAE, same budget (its run) | difference to that "
             "VAE | records |",
             "| --- | --- | ---: | ---: | ---: | ---: | --- |"]
    for r in rows:
        reference = reference_row(r["run"])
        ref = by_name.get(reference, {}).get("test_nll")
        r["reference"] = reference
        setting = ", ".join(f"{k}={v}" for k, v in r["settings"].items())
        diff = "-" if ref is None or r["run"] == reference else f"{r['test_nll'] - ref:+.2f}"
        lines.append(f"| {r['run']} | `{r['model']}` K={r['k']}{' (' + setting + ')' if setting else ''}"
                     f"{', output-bias init' if r['run'] in INIT_OUTPUT_BIAS else ''} | "
                     f"{r['test_nll']:.2f} +- {r['test_nll_se']:.2f} | {r['paper'] if r['paper'] else '-'} "
                     f"({r['paper_source']}) | {f'{ref:.2f} ({reference})' if ref is not None else '-'} | {diff} | "
                     f"[curve]({r['run']}/curve.png), [result]({r['run']}/result.json) |")
    table = "\n".join(lines)
    (docs / "table.md").write_text(table + "\n")
    summary = {"budget_epochs": args.budget, "batch_size": args.batch_size, "rows": rows}
    (docs / "summary.json").write_text(json.dumps(summary, indent=1))
    print(table)
    return summary


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", nargs="+", choices=list(ROWS), help="only these rows (default all, in order)")
    p.add_argument("--budget", type=int, default=300, help="epochs per row (the paper: 3280)")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--curve-every", type=int, default=10)
    p.add_argument("--eval-samples", type=int, default=5000)
    p.add_argument("--limit", type=int, help="train and evaluate on a fixed random subset of N images (tests)")
    p.add_argument("--out", default="runs/inference")
    p.add_argument("--docs", default="docs/inference")
    p.add_argument("--data-dir", default=os.environ.get("VAEZOO_DATA_DIR", "../shared/data"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--time-limit", type=float, help="seconds: stop cleanly after the epoch that crosses it")
    p.add_argument("--report", action="store_true", help="collect the finished rows instead of training")
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    if args.report:
        report(args)
        return 0
    return train(args)


if __name__ == "__main__":
    sys.exit(main())
