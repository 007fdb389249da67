"""New families beside the VAE at the same budget and network: what each is measured by.

Groups of models trained alike (``--group``), each model measured on the pinned test binarization
(reproduce.py's):

* ``reconstruction``: -log p(x | z = the posterior's code, its mean or one-hot mode), nats per image;
* ``mmd_to_prior``: the unbiased MMD^2 (inverse multiquadratic kernel, vaezoo.models.mmd) between 2,000 test
  codes z ~ q(z|x) and 2,000 draws of p(z) (near 0: the aggregate posterior matches the prior, which
  sampling from the prior relies on);
* ``test_nll``: the importance-sampled NLL (``--eval-samples`` samples, q(z|x) as proposal; for
  ``categorical_vae`` hard one-hot samples against the categorical prior). Every model is a generative model
  p(z) p(x|z), so it is an estimate of (a stochastic lower bound on) log p(x); the MMD models' q(z|x) was not
  trained as a proposal, so their estimate can be loose;
* ``test_metrics``: ``model.evaluate`` on the test images (the bound's parts: ``elbo``, ``discrete_elbo``, ``mmd``);
* ``samples.png``: 64 images decoded from z ~ p(z) (sample quality is not measured yet).

Groups:

* ``mmd``: ``vae``, ``wae_mmd`` (lambda 10, imq), ``info_vae`` (alpha 0, lambda 1000, rbf); vaezoo's MLP
  784-512-256 (ReLU), 8 latents (WAE's MNIST setting), Adam 1e-3;
* ``categorical``: ``categorical_vae`` (20 variables x 10 classes, tau 1 -> 0.5, closed-form KL),
  ``categorical_vae_relaxed`` (the same with the relaxed Monte-Carlo KL) and ``vae`` with 20 Gaussian latents;
  Jang et al.'s 784-512-256 network, Adam 3e-4;
* ``sphere``: ``vae`` (N-VAE) and ``hyperspherical_vae`` (S-VAE) with d = 5, 10, 20 latents (z on S^(d-1) for
  the S-VAE); Davidson et al.'s 784-256-128 ReLU network, Adam 1e-3 (runs ``vae_d5``, ``hyperspherical_vae_d5``, ...).

Shared: Bernoulli likelihood, batch 100, ``--steps`` optimizer steps on dynamically binarized MNIST.

    python benchmarks/families.py --group mmd --steps 12000 --out runs/families/mmd
    python benchmarks/families.py --group categorical --steps 50000 --out runs/families/categorical
    python benchmarks/families.py --group sphere --steps 30000 --out runs/families/sphere
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
from vaezoo import data, evaluate, fileio, images, runs, training  # noqa: E402
from vaezoo.models.mmd import mmd_u  # noqa: E402

import reproduce  # noqa: E402

NETWORK = dict(architecture="mlp", hidden_units=[512, 256], activation="relu", likelihood="bernoulli",
               data_shape=[28, 28, 1])
#: group -> (learning rate, {run: settings}); a run is named after its model unless its settings name one
GROUPS = {
    "mmd": (1e-3, {"vae": {"latent_dim": 8}, "wae_mmd": {"latent_dim": 8}, "info_vae": {"latent_dim": 8}}),
    "categorical": (3e-4, {"categorical_vae": {},
                           "categorical_vae_relaxed": {"model": "categorical_vae", "kl_estimator": "relaxed"},
                           "vae": {"latent_dim": 20}}),
    "sphere": (1e-3, {f"{model}_d{d}": {"model": model, "latent_dim": d, "hidden_units": [256, 128]}
                      for d in (5, 10, 20) for model in ("vae", "hyperspherical_vae")}),
}
MODELS = tuple(GROUPS["mmd"][1])


def run_one(name: str, args) -> dict:
    out = Path(args.out) / name
    out.mkdir(parents=True, exist_ok=True)
    blocks = -(-args.steps // args.block)
    learning_rate, models = GROUPS[args.group]
    settings = {**NETWORK, **models[name]}
    model_name = settings.pop("model", name)
    described = ("mmd_weight", "kernel", "alpha", "num_categorical", "num_classes", "temperature_start",
                 "temperature_end", "temperature_decay", "kl_estimator", "straight_through", "latent_dim",
                 "posterior", "prior", "rejection_proposals")
    description = {"model": model_name, "run": name, "group": args.group, "steps": blocks * args.block,
                   "batch_size": args.batch_size, "learning_rate": learning_rate, "seed": args.seed,
                   "config": {**{k: v for k, v in vaezoo.get_config(model_name).items() if k in described},
                              **settings}}
    with runs.open_run(out, description):
        if (out / "result.json").is_file():
            return json.loads((out / "result.json").read_text())
        keras.utils.set_random_seed(args.seed)
        model = vaezoo.get(model_name, **settings, seed=args.seed)
        model.compile(keras.optimizers.Adam(learning_rate))
        train = data.load("mnist", "train", batch_size=args.batch_size, data_dir=args.data_dir, binarize="dynamic",
                          seed=args.seed, limit=args.limit).repeat()
        start = time.monotonic()
        model.fit(train, epochs=blocks, steps_per_epoch=args.block, verbose=args.verbose,
                  callbacks=training.standard_callbacks(out, run_info=description))
        train_seconds = time.monotonic() - start
        test = reproduce.load_images("mnist", "test", args.data_dir, limit=args.eval_examples)
        recon = np.concatenate([-model.likelihood_distribution(model.code(test[i:i + 500])).log_prob(test[i:i + 500])
                                for i in range(0, len(test), 500)])
        codes = np.asarray(model.compute_terms(test[:2000], seed=args.seed)["z"][0])
        prior = np.asarray(model.prior_layer.from_noise(**model.prior_layer.draw_noise(len(codes), model.next_seed(1))))
        ll = evaluate.log_likelihood(model, test, num_samples=args.eval_samples, batch_size=100, seed=args.seed)
        metrics = model.evaluate(test, batch_size=100, verbose=0, return_dict=True)
        images.save_grid(np.asarray(model.sample(64, seed=args.seed)), out / "samples.png")
        result = {**description, "reconstruction": round(float(recon.mean()), 3),
                  "reconstruction_se": round(float(recon.std() / np.sqrt(len(recon))), 3),
                  "mmd_to_prior": round(float(mmd_u(codes, prior, "imq")), 5),
                  "test_nll": round(ll.nll, 3), "test_nll_se": round(ll.standard_error, 3),
                  "test_metrics": {k: round(float(v), 3) for k, v in metrics.items()},
                  "eval_samples": args.eval_samples, "eval_examples": len(test),
                  "train_seconds": round(train_seconds, 1)}
        fileio.atomic_write_text(out / "result.json", json.dumps(result, indent=1))
        return result


def table(results) -> str:
    lines = ["| model | reconstruction (nats) | MMD^2 to the prior | test NLL (IS, nats) | test bound (nats) | train s |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for r in results:
        metrics = r.get("test_metrics", {})
        bound = metrics.get("discrete_elbo", metrics.get("elbo"))
        bound = "-" if bound is None else f"{bound:.2f}" + (" (discrete ELBO)" if "discrete_elbo" in metrics else "")
        lines.append(f"| {r.get('run', r['model'])} | {r['reconstruction']:.2f} +- {r['reconstruction_se']:.2f} | "
                     f"{r['mmd_to_prior']:.4f} | {r['test_nll']:.2f} +- {r['test_nll_se']:.2f} | {bound} | "
                     f"{r['train_seconds']:.0f} |")
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--group", choices=sorted(GROUPS), default="mmd")
    p.add_argument("--runs", nargs="+", metavar="RUN", help="only these runs of the group (default all)")
    p.add_argument("--steps", type=int, default=12000)
    p.add_argument("--block", type=int, default=600, help="steps per 'epoch' (checkpoint unit)")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--limit", type=int, help="train on a fixed random subset of N images (tests)")
    p.add_argument("--eval-samples", type=int, default=1000)
    p.add_argument("--eval-examples", type=int, default=None)
    p.add_argument("--out", default="runs/families")
    p.add_argument("--data-dir", default=os.environ.get(data.DATA_DIR_ENV, "../shared/data"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--verbose", type=int, default=0)
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    try:
        names = list(GROUPS[args.group][1])
        unknown = sorted(set(args.runs or []) - set(names))
        if unknown:
            raise SystemExit(f"Unknown run(s) {', '.join(unknown)} of group {args.group!r}; its runs: {', '.join(names)}.")
        results = [run_one(name, args) for name in names if not args.runs or name in args.runs]
    except runs.RunError as exc:
        raise SystemExit(str(exc)) from None
    text = table(results)
    fileio.atomic_write_text(Path(args.out) / "summary.md", text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
