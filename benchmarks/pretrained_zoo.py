"""Build vaezoo's shipped pretrained weights (``vaezoo/weights/``): ``vaezoo.get(name, pretrained=True)``.

Two ways a model enters the zoo, each recording in ``vaezoo/weights/manifest.json`` its config, data,
schedule, epochs, the test metric measured here (:func:`vaezoo.zoo.measure`, so the tests can
measure it again), a cheap check of that metric, the command, and the weights' sha256:

* ``add-run RUN_FOLDER --tag TAG``: the model of a finished ``benchmarks/reproduce.py`` run (the
  Burda et al. 2016 setting). Its metric is the run's own final test NLL (5000 importance samples on
  all 10,000 test images, ``result.json``), measured by the same protocol as ``measure``; the
  fixed binarization takes the early-stopped ``best.keras``, dynamic binarization the last epoch.
* ``train NAME``: trains one of the entries of ``TRAINED`` with ``vaezoo train`` (the CLI a user
  runs), then measures its test metric: the importance-sampled NLL (continuous latents) or the test
  loss (VQ-VAEs and priors over codes: a negative log-likelihood given the codes, nats).

    python benchmarks/reproduce.py --model vae --k 1 --dataset mnist --budget 450 --out runs/repro/vae_k1
    python benchmarks/pretrained_zoo.py add-run runs/repro/vae_k1 --tag mnist_dynamic --default
    python benchmarks/pretrained_zoo.py train beta_vae_conv
    python benchmarks/pretrained_zoo.py add-m2 runs/m2_100 --tag mnist_100 --default
    python benchmarks/pretrained_zoo.py remeasure vae.mnist_dynamic    # after the evaluation data changed
    vaezoo train vae --dataset mnist --epochs 100 --seed 0 --out runs/vae_100    # cvae.mnist's reference
    python benchmarks/pretrained_zoo.py measure-run runs/vae_100 --like cvae.mnist
    vaezoo list --pretrained

Weights are committed only when final (each commit of a binary stays in the history).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

import vaezoo  # noqa: E402
from vaezoo import cli, data, pretrained, runs, zoo  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import reproduce  # noqa: E402

#: The cheap check that the default tests repeat: a seeded NLL with 100 importance samples on the first
#: 1000 test images (the full metric is in the slow tests).
CHECK_SAMPLES, CHECK_EXAMPLES = 100, 1000

#: Models trained by ``train``: tag, config overrides, dataset, binarize, epochs, the test metric and its
#: settings. ``test_nll``: the importance-sampled NLL with ``metric_samples`` (a conv decoder costs ~20x an
#: MLP's: 200 samples on all 2000 sprite test images take minutes), its check with ``check_samples`` on the
#: first ``check_examples`` test images. ``test_reconstruction`` (VQ-VAEs): -log p(x | z_q(x)), deterministic.
#: ``prior``: the prior over codes trained next on the model's codes (``vaezoo train PRIOR --vqvae``), measured
#: by its test NLL of the codes; the two add up to an upper bound on the test NLL of the images.
TRAINED = {
    # beta 1 and lr 1e-3: at beta 4 the model keeps only position and scale (round blobs), and the
    # shapes take many epochs to appear (docs/results.md, "Quick-start model on the sprites").
    "beta_vae_conv": dict(tag="sprites", overrides={"beta": 1.0, "learning_rate": 0.001}, dataset="sprites",
                          binarize="none", epochs=80, metric="test_nll",
                          metric_samples=200, check_samples=50, check_examples=200),
    # MNIST test images binarized as in the reproduction (seed 12345), so that the bound compares with the
    # NLL of vae.mnist_dynamic and iwae.mnist_dynamic.
    # Epochs sized to about an hour for all four on 2 CPU cores (s/epoch alone: vq_vae ~38, its prior ~94,
    # vq_vae2 ~100, its prior ~190 at 32 channels).
    "vq_vae": dict(tag="mnist", overrides={}, dataset="mnist", binarize="dynamic", epochs=12,
                   metric="test_reconstruction", check_examples=1000,
                   prior=dict(tag="mnist", overrides={}, epochs=10)),
    "vq_vae2": dict(tag="mnist", overrides={}, dataset="mnist", binarize="dynamic", epochs=8,
                    metric="test_reconstruction", check_examples=1000,
                    prior=dict(tag="mnist", overrides={"channels": 32}, epochs=6)),
    # The conditional VAE: its metric is -log p(x|y) on the labelled test images (1000 importance samples).
    "cvae": dict(tag="mnist", overrides={}, dataset="mnist", binarize="dynamic", epochs=100, metric="test_nll",
                 labels=True, metric_samples=1000, check_samples=100, check_examples=1000),
}


#: How the manifest names a data set of ``TRAINED``.
DATASETS = {"mnist": "MNIST, dynamically binarized (a fresh Bernoulli draw each epoch)"}


def test_data(dataset: str, binarize: str, seed: int, limit=None, labels: bool = False) -> dict:
    """The ``data.load`` arguments of a test set (a dynamic binarization with a fixed seed and batch size
    is one fixed set of binary images; ``labels``: with its labels, for a conditional model)."""
    spec = {"name": dataset, "split": "test", "binarize": binarize, "seed": seed, "batch_size": 1000, "limit": limit}
    return {**spec, "labels": True} if labels else spec


def nll_metric(spec: dict, num_samples: int, seed: int, value=None) -> dict:
    out = {"name": "test_nll", "unit": "nats", "num_samples": num_samples, "batch_size": 100, "seed": seed,
           "data": spec}
    return out if value is None else {**out, "value": round(float(value), 3)}


def paper_note(description: dict) -> str:
    """The manifest's note on the paper's figure for a run: the source the richer-inference table gives for the
    row of the same model, K and settings (``inference_table.ROWS``), else Burda et al.'s (``reproduce.py``)."""
    import inference_table

    paper = description.get("paper_nll")
    for model, k, settings, row_paper, source in inference_table.ROWS.values():
        if (model, k, settings) == (description["model"], description["k"], description.get("settings", {})):
            if row_paper is None:
                return f"No paper figure for this network ({source}): docs/results.md, richer inference table."
            return f"The reference reports {row_paper} nats ({source}); docs/results.md, richer inference table."
    if paper is None:
        return "No paper figure for this network: docs/results.md, richer inference table."
    return f"The paper reports {paper} nats at convergence (Burda et al. 2016: 3280 epochs)."


def add_run(args) -> None:
    folder = Path(args.run)
    description = json.loads((folder / "description.json").read_text())
    result_path = folder / reproduce.RESULT_FILE
    if not result_path.is_file():
        sys.exit(f"{folder} has no {reproduce.RESULT_FILE}: the run has not finished its budget")
    result = json.loads(result_path.read_text())
    fixed = description["dataset"] == "binarized_mnist"
    model = keras.models.load_model(folder / (reproduce.BEST_FILE if fixed else f"{runs.CHECKPOINT_DIR}/{runs.LAST_CHECKPOINT}"))
    binarize = "none" if fixed else "dynamic"
    spec = test_data(description["dataset"], binarize, reproduce.TEST_BINARIZATION_SEED, limit=result["eval_examples"])
    metric = nll_metric(spec, result["eval_samples"], description["seed"], result["test_nll"])
    metric.update(standard_error=result["test_nll_se"], paper=description["paper_nll"])
    check = nll_metric({**spec, "limit": CHECK_EXAMPLES}, CHECK_SAMPLES, description["seed"])
    check["value"] = round(zoo.measure(model, check, data_dir=args.data_dir), 3)
    steps = data.load(description["dataset"], "train", batch_size=description["batch_size"], data_dir=args.data_dir,
                      binarize=binarize).cardinality()
    schedule = {"optimizer": "Adam(beta_1=0.9, beta_2=0.999, epsilon=1e-4)",
                "learning_rate": "1e-3 * 10**(-i/7) in stage i = 0..7, stage i lasting 3**i/3280 of the steps "
                                 "(Burda et al. 2016, squeezed into the budget)",
                "batch_size": description["batch_size"], "steps_per_epoch": int(steps),
                "budget_epochs": description["budget"], "objective": f"{description['model']} bound, K={description['k']}",
                "early_stopping": "best validation NLL" if fixed else None, "model_epoch": result["model_epoch"]}
    dataset = ("binarized MNIST (Larochelle & Murray's fixed binarization; 50k train)" if fixed
               else "MNIST, dynamically binarized (a fresh Bernoulli draw each epoch)")
    settings = description.get("settings", {})  # a posterior, prior or bound set over the architecture
    command = (f"python benchmarks/reproduce.py --model {description['model']} --k {description['k']} --dataset "
               f"{description['dataset']} --budget {description['budget']} --batch-size {description['batch_size']}"
               + "".join(f" --set {k}={shlex.quote(json.dumps(v))}" for k, v in settings.items())
               + (f" --kl-warmup {description['kl_warmup_steps']}" if description.get("kl_warmup_steps") else "")
               + (" --init-output-bias" if description.get("init_output_bias") else ""))
    config = {**reproduce.architecture(description["model"]), **settings}
    config.update(num_samples=description["k"], seed=description["seed"])
    entry = zoo.add(model, args.tag, config=config, dataset=dataset, schedule=schedule,
                           epochs=description["budget"], metric=metric, check=check, folder=args.zoo,
                           default=args.default, command=command,
                           notes=paper_note(description))
    print(json.dumps({entry.key: {"metric": entry.metric["value"], "check": entry.check["value"],
                                  "bytes": entry.bytes}}))


def add_m2(args) -> None:
    """The model of a finished ``benchmarks/semi_supervised.py`` run: its metric is the run's test error of q(y|x)
    on all 10,000 test images (percent), its check the same on the first 1000."""
    import semi_supervised

    folder = Path(args.run)
    description = json.loads((folder / "description.json").read_text())
    if not (folder / semi_supervised.RESULT_FILE).is_file():
        sys.exit(f"{folder} has no {semi_supervised.RESULT_FILE}: the run has not finished its epochs")
    result = json.loads((folder / semi_supervised.RESULT_FILE).read_text())
    model = keras.models.load_model(folder / runs.CHECKPOINT_DIR / runs.LAST_CHECKPOINT)
    spec = test_data("mnist", "dynamic", reproduce.TEST_BINARIZATION_SEED, limit=result["test_examples"], labels=True)
    metric = {"name": "test_error", "unit": "percent", "data": spec, "value": result["test_error"],
              "paper": description["paper_error"]}
    check = {"name": "test_error", "unit": "percent", "data": {**spec, "limit": CHECK_EXAMPLES}}
    check["value"] = round(zoo.measure(model, check, data_dir=args.data_dir), 3)
    settings = description.get("settings", {})
    command = (f"python benchmarks/semi_supervised.py --num-labels {description['num_labels']} --label-seed "
               f"{description['label_seed']} --epochs {description['epochs']} --batch-size {description['batch_size']}"
               + "".join(f" --set {k}={shlex.quote(json.dumps(v))}" for k, v in settings.items()))
    config = {**vaezoo.registry.model_kwargs("m2", vaezoo.get_config("m2", **settings)),
              "num_labels": description["num_labels"], "seed": description["seed"]}
    schedule = {"optimizer": "adam", "learning_rate": vaezoo.get_config("m2", **settings)["learning_rate"],
                "batch_size": f"{description['batch_size']} unlabelled + a tenth as many labelled images",
                "labelled_images": description["num_labels"], "label_seed": description["label_seed"],
                "test_nll": result["test_nll"], "labelled_train_error": result["labelled_train_error"]}
    entry = zoo.add(model, args.tag, config=config, dataset=f"MNIST, dynamically binarized, "
                    f"{description['num_labels']} labelled images (balanced) and the rest unlabelled",
                    schedule=schedule, epochs=description["epochs"], metric=metric, check=check, folder=args.zoo,
                    default=args.default, command=command,
                    notes=f"Kingma et al. 2014, Table 1 (M2): {description['paper_error']}% test error.")
    print(json.dumps({entry.key: {"metric": entry.metric["value"], "check": entry.check["value"],
                                  "bytes": entry.bytes}}))


def _train_run(name: str, tag: str, dataset: str, overrides: dict, epochs: int, args, extra=()) -> tuple[Path, dict]:
    """``vaezoo train`` into ``<runs>/<name>.<tag>`` (rerun: resumes, or nothing to do when finished)."""
    run = Path(args.runs) / f"{name}.{tag}"
    argv = ["train", name, "--dataset", dataset, "--epochs", str(args.epochs or epochs), "--seed", "0",
            "--out", str(run), "--verbose", "2", "--data-dir", str(args.data_dir), *extra,
            *(["--limit", str(args.limit)] if args.limit else [])]
    for key, value in overrides.items():
        argv += ["--set", f"{key}={json.dumps(value)}"]
    start = time.monotonic()
    code = cli.main(argv)
    if code:
        sys.exit(f"vaezoo {shlex.join(argv)} failed with exit code {code}")
    full = vaezoo.get_config(name, **yaml_config(run))
    schedule = {"optimizer": full["optimizer"], "learning_rate": full["learning_rate"],
                "batch_size": full["batch_size"], "train_seconds": round(time.monotonic() - start)}
    # The command as anyone would type it: the default runs folder, the data folder from $VAEZOO_DATA_DIR.
    shown = [a for a in argv if a != str(args.data_dir)]
    shown.remove("--data-dir")
    shown = [f"runs/pretrained/{a[len(args.runs):].lstrip('/')}" if a.startswith(str(args.runs)) else a
             for a in shown]
    return run, {"argv": shown, "config": vaezoo.registry.model_kwargs(name, full), "schedule": schedule,
                 "epochs": args.epochs or epochs}


def _deterministic_metric(name: str, spec: dict, examples: int | None, **extra) -> dict:
    return {"name": name, "unit": "nats", "data": {**spec, "limit": examples}, **extra}


def train(args) -> None:
    spec = TRAINED[args.name]
    extra = reproduce.settings(args)  # an experiment's changes to the entry's config
    run, info = _train_run(args.name, spec["tag"], spec["dataset"], {**spec["overrides"], **extra}, spec["epochs"],
                           args)
    model = keras.models.load_model(run / runs.MODEL_FILE)
    seed = reproduce.TEST_BINARIZATION_SEED if spec["dataset"] == "mnist" else 0
    test = test_data(spec["dataset"], spec["binarize"], seed, limit=args.limit, labels=spec.get("labels", False))
    check_examples = min(spec["check_examples"], args.limit or spec["check_examples"])
    if spec["metric"] == "test_nll":
        metric = nll_metric(test, spec["metric_samples"], 0)
        check = nll_metric({**test, "limit": check_examples}, spec["check_samples"], 0)
    else:
        metric = _deterministic_metric(spec["metric"], test, test["limit"])
        check = _deterministic_metric(spec["metric"], test, check_examples)
    for m in (metric, check):
        m["value"] = round(zoo.measure(model, m, data_dir=args.data_dir), 3)
    key = f"{args.name}.{spec['tag']}"
    prior_key = f"{model.prior_name}.{spec['prior']['tag']}" if "prior" in spec else None
    command = f"python benchmarks/pretrained_zoo.py train {args.name}" + "".join(
        f" --set {shlex.quote(f'{k}={json.dumps(v)}')}" for k, v in extra.items())
    dataset = DATASETS.get(spec["dataset"], spec["dataset"])
    entry = zoo.add(model, spec["tag"], config=info["config"], dataset=dataset,
                           schedule=info["schedule"], epochs=info["epochs"], metric=metric, check=check,
                           folder=args.zoo, default=True, prior=prior_key,
                           command=f"{command}  (= vaezoo {shlex.join(info['argv'])})")
    report = {entry.key: {"metric": entry.metric["value"], "check": entry.check["value"], "bytes": entry.bytes}}
    if prior_key is not None:
        # The prior learns the codes of the weights just shipped: train it on the run's checkpoint (the same
        # weights) and measure it on the codes of the shipped entry.
        p = spec["prior"]
        prior_run, prior_info = _train_run(model.prior_name, p["tag"], spec["dataset"], p["overrides"], p["epochs"],
                                           args, extra=["--vqvae", str(run / runs.MODEL_FILE)])
        prior = keras.models.load_model(prior_run / runs.MODEL_FILE)
        prior_metric = _deterministic_metric("test_loss", test, test["limit"], codes_of=key)
        prior_check = _deterministic_metric("test_loss", test, check_examples, codes_of=key)
        for m in (prior_metric, prior_check):
            m["value"] = round(zoo.measure(prior, m, data_dir=args.data_dir), 3)
        prior_entry = zoo.add(
            prior, p["tag"], config=prior_info["config"], dataset=f"the codes of {key} on {dataset.split(' (')[0]}",
            schedule=prior_info["schedule"], epochs=prior_info["epochs"], metric=prior_metric, check=prior_check,
            folder=args.zoo, default=True, command=f"{command}  (= vaezoo {shlex.join(prior_info['argv'])})",
            notes=f"With {key}: test NLL of the images <= reconstruction + this NLL of the codes = "
                  f"{entry.metric['value'] + prior_metric['value']:.2f} nats.")
        report[prior_entry.key] = {"metric": prior_entry.metric["value"], "check": prior_entry.check["value"],
                                   "bytes": prior_entry.bytes, "bound": round(entry.metric["value"]
                                                                              + prior_metric["value"], 3)}
    print(json.dumps(report))


def remeasure(args) -> None:
    for key in args.keys:
        entry = zoo.remeasure(key, args.zoo, data_dir=args.data_dir, fields=args.fields)
        print(json.dumps({key: {"metric": entry.metric["value"], "check": entry.check["value"]}}))


def measure_run(args) -> None:
    """A finished ``vaezoo train`` run's model measured with the metric (and check) of a zoo entry: the reference
    beside a shipped model, e.g. the ``vae`` trained with ``cvae.mnist``'s network, data and epochs. An
    unconditional model is measured on the same images without their labels (its -log p(x) beside the
    conditional model's -log p(x|y))."""
    entry = pretrained.manifest(args.zoo)[args.like]
    model = keras.models.load_model(Path(args.run) / runs.MODEL_FILE)
    report = {"run": str(args.run), "like": args.like}
    for field in args.fields:
        metric = json.loads(json.dumps(getattr(entry, field)))
        if not getattr(model, "uses_condition", False):
            metric["data"].pop("labels", None)
        report[field] = {"value": round(zoo.measure(model, metric, data_dir=args.data_dir), 3),
                         f"{args.like} value": metric["value"]}
    print(json.dumps(report))


def yaml_config(run: Path) -> dict:
    import yaml

    return yaml.safe_load((run / runs.CONFIG_FILE).read_text())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--zoo", default=str(pretrained.SHIPPED_DIR), help="the zoo folder (default: vaezoo/weights)")
    p.add_argument("--data-dir", default=os.environ.get(data.DATA_DIR_ENV, "../shared/data"))
    sub = p.add_subparsers(dest="command", required=True)
    a = sub.add_parser("add-run", help="add the model of a finished benchmarks/reproduce.py run")
    a.add_argument("run")
    a.add_argument("--tag", required=True)
    a.add_argument("--default", action="store_true", help="make it the tag that pretrained=True picks")
    a.set_defaults(func=add_run)
    m = sub.add_parser("add-m2", help="add the model of a finished benchmarks/semi_supervised.py run")
    m.add_argument("run")
    m.add_argument("--tag", required=True)
    m.add_argument("--default", action="store_true", help="make it the tag that pretrained=True picks")
    m.set_defaults(func=add_m2)
    t = sub.add_parser("train", help="train and add one of the models of TRAINED")
    t.add_argument("name", choices=sorted(TRAINED))
    t.add_argument("--runs", default="runs/pretrained", help="where the training run folders go")
    t.add_argument("--epochs", type=int, help="instead of the entry's epochs (tests)")
    t.add_argument("--limit", type=int, help="train and measure on a fixed random subset of N images (tests)")
    t.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="a config value on top of the entry's (YAML; repeatable): an experiment, best with --zoo "
                        "pointing at a scratch folder")
    t.set_defaults(func=train)
    mr = sub.add_parser("measure-run", help="measure a finished `vaezoo train` run with a zoo entry's metric "
                                            "(the reference model beside a shipped one)")
    mr.add_argument("run")
    mr.add_argument("--like", required=True, metavar="NAME.TAG", help="the entry whose metric and data to use")
    mr.add_argument("--fields", nargs="+", default=["metric", "check"], choices=["metric", "check"])
    mr.set_defaults(func=measure_run)
    r = sub.add_parser("remeasure", help="measure the metric and check of shipped entries again (weights unchanged)")
    r.add_argument("keys", nargs="+", metavar="NAME.TAG")
    r.add_argument("--fields", nargs="+", default=["metric", "check"], choices=["metric", "check"],
                   help="measure only these (the check takes seconds, the metric up to 18 minutes per model)")
    r.set_defaults(func=remeasure)
    args = p.parse_args(argv)
    # A prior's metric reads the codes of its VQ-VAE from the zoo being built (``codes_of``).
    before = os.environ.get(pretrained.PRETRAINED_DIR_ENV)
    os.environ[pretrained.PRETRAINED_DIR_ENV] = str(Path(args.zoo).resolve())
    try:
        args.func(args)
    finally:
        if before is None:
            del os.environ[pretrained.PRETRAINED_DIR_ENV]
        else:
            os.environ[pretrained.PRETRAINED_DIR_ENV] = before
    return 0


if __name__ == "__main__":
    sys.exit(main())
