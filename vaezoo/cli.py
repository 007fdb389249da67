"""The ``vaezoo`` command line: list, config, train, evaluate, sample, export.

    vaezoo list ["*vae*"]
    vaezoo config NAME [--set key=value ...]
    vaezoo train NAME [--set key=value ...] [--data SOURCE] [--epochs N] [--out DIR] [--strategy S]
    vaezoo train vae_conv --data my_images/ --image-size 64 64      # a folder (class sub-folders), .npz or .npy
    vaezoo train vae --set mixed_precision=mixed_bfloat16 --set jit_compile=false --set steps_per_execution=1
    TF_CONFIG='{"cluster": ...}' vaezoo train vae --strategy multi_worker   # on each worker (see README)
    vaezoo evaluate NAME --checkpoint PATH [--data SOURCE]
    vaezoo evaluate NAME --checkpoint PATH --metrics mig,dci,sap,factor_vae_score   # disentanglement (sprites)
    vaezoo sample NAME --checkpoint PATH --out grid.png
    vaezoo sample cvae --checkpoint runs/cvae/model.keras --labels 0-9 --out digits.png   # one row per class
    vaezoo train pixelcnn_prior --vqvae runs/vq_vae/model.keras      # a prior over a VQ-VAE's codes
    vaezoo sample vq_vae --checkpoint runs/vq_vae/model.keras --prior runs/pixelcnn_prior/model.keras --out g.png
    vaezoo train hierarchical_pixelcnn_prior --vqvae runs/vq_vae2/model.keras   # the same for VQ-VAE-2
    vaezoo export vae --checkpoint runs/vae/model.keras --format saved_model     # exports/vae/<version>/
    vaezoo export vae --checkpoint runs/vae/model.keras --format tflite --quantize float16
    vaezoo list --pretrained                                   # the shipped weights: NAME.TAG, data, test metric
    vaezoo sample vae --pretrained --out vae.png               # --pretrained [TAG] instead of --checkpoint

``train`` shows Keras' progress bar, writes TensorBoard logs and a crash-safe run folder
(:mod:`vaezoo.runs`), and resumes an interrupted run in the same ``--out`` folder where it stopped.
A mistake is one line on stderr and exit status 2 (``--debug`` shows the traceback); a run stopped by
a non-finite loss exits with 3.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import logging
import os
import select
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Sequence

import keras
import numpy as np
import yaml

import vaezoo
from vaezoo import config as zconfig
from vaezoo import callbacks as callbacks_module
from vaezoo import data, distribute, evaluate, export, pictures, runs, trainer

def _overrides(args) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in args.set or []:
        key, value = zconfig.parse_assignment(item)
        out[key] = value
    for key in ("dataset", "epochs", "batch_size", "binarize", "image_size", "color_mode", "validation_split"):
        value = getattr(args, key, None)
        if value is not None:
            out[key] = value
    return out


def _dataset(cfg, split, args, limit=None, shuffle=None, labels=False):
    return data.from_config(cfg, split, data_dir=args.data_dir, seed=args.seed, limit=limit, shuffle=shuffle,
                            labels=labels)


def _validation_split(cfg) -> str:
    """The split a run validates on and ``sample`` reconstructs: the data set's own (binarized MNIST's
    ``valid``, ``test`` elsewhere) or, for a user's data, the held-out ``validation`` fraction."""
    return data.sources.validation_split_name(cfg["dataset"])


def parse_labels(text: str, num_classes: int) -> list[int]:
    """``--labels``: classes as ``0-9``, ``1,3,5`` or ``0-2,7``, each in ``0 .. num_classes-1``."""
    out = []
    for part in (p.strip() for p in text.split(",")):
        try:
            low, _, high = part.partition("-")
            values = range(int(low), int(high or low) + 1)
        except ValueError:
            raise UsageError(f"--labels {text!r}: {part!r} is not a class or a range such as 0-9.") from None
        if not values:
            raise UsageError(f"--labels {text!r}: the range {part!r} is empty.")
        bad = [v for v in values if not 0 <= v < num_classes]
        if bad:
            raise UsageError(f"--labels {text!r}: class {bad[0]} is outside 0..{num_classes - 1} (num_classes "
                             f"{num_classes}).")
        out += list(values)
    return out


def cmd_list(args) -> int:
    if args.pretrained:
        return _list_pretrained(args.pattern)
    names = vaezoo.list_models(args.pattern)
    if not names:
        print(f"no model matches {args.pattern!r}")
        return 1
    infos = [vaezoo.model_info(n) for n in names]
    rows = [(i.name, i.family, i.source) for i in infos]
    widths = [max(len(r[i]) for r in rows + [("name", "family", "package")]) for i in range(3)]
    for row in [("name", "family", "package")] + rows:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip())
    return 0


def _list_pretrained(pattern: str) -> int:
    keys = vaezoo.list_pretrained(pattern)
    if not keys:
        print(f"no pretrained weights match {pattern!r}")
        return 1
    header = ("model", "dataset", "epochs", "test metric", "MB")
    entries = vaezoo.pretrained.manifest()  # read once, not once per row
    rows = []
    for key in keys:
        e = entries[key]
        m = e.metric
        rows.append((key + (" *" if e.default else ""), e.dataset, str(e.epochs),
                     f"{m['name']} {m['value']:.2f} {m.get('unit', '')}".rstrip(), f"{e.bytes / 1e6:.1f}"))
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip())
    print("* the default tag (pretrained=True); vaezoo.get(NAME, pretrained=True) or vaezoo.get('NAME.TAG', "
          "pretrained=True) loads one")
    return 0


def cmd_config(args) -> int:
    info = vaezoo.model_info(args.name)
    cfg = vaezoo.get_config(args.name, **_overrides(args))
    print(f"# {args.name}: {info.family} from {info.source}" + (f" ({info.config_path})" if info.config_path else ""))
    print(trainer.config_yaml(cfg), end="")
    return 0


def cmd_train(args) -> int:
    def on_strategy(stage: str) -> None:  # the multi-worker supervisor waits from "wait" to "ready"
        _tell_supervisor(b"w" if stage == "wait" else b"r", last=stage == "ready")

    result = trainer.train(args.name, overrides=_overrides(args), out=args.out, seed=args.seed, limit=args.limit,
                           data_dir=args.data_dir, strategy=args.strategy, pretrained=args.pretrained,
                           vqvae=args.vqvae, kl_warmup=args.kl_warmup or 0, init_output_bias=args.init_output_bias,
                           overwrite=args.overwrite, verbose=args.verbose, on_strategy=on_strategy)
    if not result.already_finished:
        print(f"saved {result.out / runs.MODEL_FILE}; wrote {', '.join(map(str, result.written))}; TensorBoard logs "
              f"in {result.out / 'logs'}")
    return 0


def _model(args):
    """The model that ``evaluate``/``sample``/``export`` work on: ``--checkpoint`` or ``--pretrained [TAG]``."""
    if args.pretrained is None:
        return trainer.load_checkpoint(args.checkpoint, expect=args.name)
    model = vaezoo.get(args.name, pretrained=args.pretrained)
    model.compile()
    return model


def _prior(args) -> tuple[Any, str | None]:
    """``--prior CHECKPOINT``, else with ``--pretrained`` the prior shipped with those weights (if any),
    with where it came from (the checkpoint path or the shipped prior's key); ``(None, None)`` if neither."""
    if args.prior:
        return trainer.load_checkpoint(args.prior), args.prior
    if args.pretrained is not None:
        prior = vaezoo.pretrained_info(args.name, args.pretrained).prior
        if prior:
            return vaezoo.get(prior, pretrained=True), prior
    return None, None


#: The data settings ``evaluate``/``sample`` take from the run folder of ``--checkpoint``.
_RUN_DATA_KEYS = ("dataset", "binarize", "image_size", "color_mode", "validation_split")


def _run_data_defaults(args) -> dict[str, Any]:
    """The data settings of the run that wrote ``--checkpoint`` (its ``config.yaml``, beside the checkpoint
    or one folder up for ``checkpoints/*.keras``), so that a model trained on a user's folder is evaluated and
    reconstructs on it without repeating ``--data``; {} when there is no run folder."""
    checkpoint = getattr(args, "checkpoint", None)
    if not checkpoint:
        return {}
    for folder in (Path(checkpoint).parent, Path(checkpoint).parent.parent):
        path = folder / runs.CONFIG_FILE
        if path.is_file():
            try:
                recorded = yaml.safe_load(path.read_text()) or {}
            except (OSError, yaml.YAMLError):
                return {}
            return {k: recorded[k] for k in _RUN_DATA_KEYS if k in recorded} if isinstance(recorded, dict) else {}
    return {}


def _data_config(args) -> dict[str, Any]:
    """The config whose data ``evaluate``/``sample`` read: with ``--pretrained``, the weights' own data set;
    with a ``--checkpoint`` of a run folder, that run's data; options given on the command line win."""
    overrides = _overrides(args)
    if getattr(args, "pretrained", None) is not None:
        overrides = {**trainer.pretrained_defaults(args.name, args.pretrained), **overrides}
    else:
        overrides = {**_run_data_defaults(args), **overrides}
    return vaezoo.get_config(args.name, **overrides)


def cmd_evaluate(args) -> int:
    if args.metrics:
        return _evaluate_disentanglement(args)
    if args.samples:
        return _evaluate_samples(args)
    cfg = _data_config(args)
    model = _model(args)
    if args.num_samples and not hasattr(model, "log_weights"):
        raise UsageError(
            f"--num-samples estimates log p(x) for continuous-latent models (VAE, BetaVAE, IWAE); "
            f"{type(model).__name__} has discrete codes."
        )
    ds = _dataset(cfg, args.split, args, limit=args.limit, shuffle=False, labels=pictures.conditional(model))
    results = model.evaluate(ds, return_dict=True, verbose=args.verbose)
    print(f"{args.name} on {cfg['dataset']}:{args.split} (nats per example)")
    for key, value in results.items():
        print(f"  {key:>15s}: {value:.4f}")
    if args.num_samples:
        ll = evaluate.log_likelihood(model, ds, num_samples=args.num_samples, seed=args.seed or 0)
        print(f"  {'log p(x)':>15s}: {ll.mean:.4f}  (importance sampled, {args.num_samples} samples)")
        print(f"  {'NLL':>15s}: {ll.nll:.4f} +- {ll.standard_error:.4f}")
        print(f"  {'bits/dim':>15s}: {ll.bits_per_dim:.4f}")
    return 0


def _evaluate_samples(args) -> int:
    """``evaluate --samples N``: FID, KID, precision and recall of N samples against the split's images."""
    from vaezoo import metrics

    cfg = _data_config(args)
    classifier = args.classifier or metrics.default_classifier(cfg["dataset"])
    extractor = metrics.FeatureExtractor(classifier)
    model = _model(args)
    if tuple(model.data_shape) != extractor.data_shape:
        raise UsageError(f"the {classifier} classifier reads {extractor.data_shape} images; {args.name} draws "
                         f"{tuple(model.data_shape)} (pick another with --classifier: "
                         f"{', '.join(metrics.classifier_names())}).")
    real = _dataset({**cfg, "binarize": "none"}, args.split, args, limit=args.limit, shuffle=False)
    real = np.concatenate([np.asarray(keras.utils.unpack_x_y_sample_weight(b)[0]) for b in real])
    prior, prior_source = _prior(args)
    start = time.monotonic()
    quality = metrics.model_sample_quality(model, real, num_samples=args.samples, classifier=extractor,
                                           seed=args.seed or 0, prior=prior)
    where = f", codes from {prior_source}" if prior is not None else ""
    print(f"{args.name}: {args.samples} samples{where} against {len(real)} images of {cfg['dataset']}:{args.split} "
          f"(features of the {classifier} classifier; {time.monotonic() - start:.0f} s)")
    print(f"  {metrics.describe(quality)}")
    return 0


def _evaluate_disentanglement(args) -> int:
    """``evaluate --metrics``: disentanglement of the posterior means on images with known factors."""
    from vaezoo import disentanglement

    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()]
    unknown = [m for m in metrics if m not in disentanglement.METRICS]
    if unknown or not metrics:
        raise UsageError(f"--metrics {args.metrics!r}: unknown metric {unknown[0] if unknown else ''!r}; valid "
                         f"choices: {', '.join(disentanglement.METRICS)}.")
    model = _model(args)
    if not hasattr(model, "latent_dim"):
        raise UsageError(f"--metrics scores continuous codes; {type(model).__name__} has discrete codes.")
    height, width, channels = model.data_shape
    if height != width or channels != 1:
        raise UsageError(f"--metrics needs a model of square one-channel images (the sprites); {args.name} reads "
                         f"{tuple(model.data_shape)}.")
    if args.factor_data == "dsprites" and height != 64:
        raise UsageError(f"dSprites images are 64x64; {args.name} reads {height}x{width}.")
    factors = data.factor_data(args.factor_data, data_dir=args.data_dir, size=height)
    start = time.monotonic()
    scores = disentanglement.evaluate(disentanglement.posterior_means(model), factors, metrics,
                                      num_examples=args.num_examples, seed=args.seed or 0)
    print(f"{args.name} on {args.factor_data} ({height}x{width}, factors: {', '.join(factors.factor_names)}; "
          f"{args.num_examples} examples, {time.monotonic() - start:.0f} s)")
    for key, value in scores.items():
        print(f"  {key:>24s}: {value:.4f}")
    return 0


def cmd_sample(args) -> int:
    cfg = _data_config(args)
    model = _model(args)
    try:
        test_ds = _dataset(cfg, _validation_split(cfg), args, shuffle=False, labels=pictures.conditional(model))
    except (FileNotFoundError, data.DataError) as exc:
        print(f"no reconstructions: {exc}", file=sys.stderr)
        test_ds = None
    classes = None
    if args.labels is not None:
        if not pictures.conditional(model):
            raise UsageError(f"--labels picks the classes of a conditional model (cvae); {args.name} ignores labels.")
        classes = parse_labels(args.labels, model.num_classes)
    prior, prior_source = _prior(args)
    written = pictures.write_samples(model, Path(args.out), test_ds, args.seed, prior=prior, classes=classes)
    if args.traverse:
        if not hasattr(model, "traverse"):
            raise UsageError(f"--traverse sweeps continuous latents; {type(model).__name__} has discrete codes.")
        if test_ds is None:
            raise UsageError("--traverse needs the data set to encode an example (see --data-dir).")
        written += pictures.write_traversal(model, Path(args.out), test_ds)
    written += pictures.write_latent_plots(model, Path(args.out), cfg, data_dir=args.data_dir, seed=args.seed)
    source = ""
    if prior is not None:
        source = f" (codes drawn from the prior {prior_source})"
    elif hasattr(model, "prior_name"):
        source = f" (codes drawn uniformly: pass --prior, a trained {model.prior_name})"
    print(f"wrote {', '.join(map(str, written))}{source}")
    return 0


def cmd_export(args) -> int:
    vaezoo.model_info(args.name)  # an unknown name fails here, with close names
    model = _model(args)
    prior, _ = _prior(args)
    signatures = args.signatures.split(",") if args.signatures else None
    if args.format == "saved_model":
        if args.quantize:
            raise ValueError("--quantize applies to --format tflite; a SavedModel keeps float32 weights.")
        path = export.saved_model(model, args.out, args.version, name=args.name, signatures=signatures, prior=prior,
                                  overwrite=args.overwrite)
        names = list(export.load_exported(path).signatures)
    else:
        suffix = f".{args.quantize}" if args.quantize else ""
        path = Path(args.out) / args.name / f"{args.name}{suffix}.tflite"
        path = export.tflite(model, path, signatures or export.DEFAULT_SIGNATURES, quantize=args.quantize, prior=prior,
                             overwrite=args.overwrite)
        names = list(export.load_exported(path).signatures)
    print(f"wrote {path} ({path.stat().st_size if path.is_file() else _folder_size(path)} bytes; "
          f"signatures: {', '.join(names)})")
    return 0


def _folder_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _bounded(kind: type, constraint: zconfig.Range):
    """An argparse type: ``kind`` (int or float) within ``constraint``, or a one-line usage error."""
    what = "an integer" if kind is int else "a number"

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {what} {constraint}, got {text!r}") from None
        if not constraint.accepts(value):
            raise argparse.ArgumentTypeError(f"must be {what} {constraint}, got {text}")
        return value

    return parse


_positive_int = _bounded(int, zconfig.AT_LEAST_1)
_non_negative_int = _bounded(int, zconfig.NON_NEGATIVE)
_positive_float = _bounded(float, zconfig.POSITIVE)
_fraction = _bounded(float, zconfig.Range(0, 1, low_open=True, high_open=True))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vaezoo", description="A model zoo of variational autoencoders.")
    parser.add_argument("--version", action="version", version=f"vaezoo {vaezoo.__version__}")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    sub = parser.add_subparsers(dest="command", required=True)

    def add_parser(name, **kwargs):
        p = sub.add_parser(name, **kwargs)
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show the traceback of an error")
        return p

    p = add_parser("list", help="list registered models and the package each comes from")
    p.add_argument("pattern", nargs="?", default="*", help="fnmatch pattern, e.g. '*vae*'")
    p.add_argument("--pretrained", action="store_true",
                   help="list the shipped pretrained weights (NAME.TAG, data, epochs, test metric) instead")
    p.set_defaults(func=cmd_list)

    def common(p, checkpoint=False):
        p.add_argument("name", help="registered model name (see `vaezoo list`)")
        p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key (repeatable)")
        p.add_argument("--data", "--dataset", dest="dataset", metavar="SOURCE",
                       help="the data: " + data.sources.describe_choices())
        p.add_argument("--image-size", type=_positive_int, nargs=2, metavar=("HEIGHT", "WIDTH"), dest="image_size",
                       help="a user's images: centre-crop to the aspect ratio, then resize (needed when a folder's "
                            "images differ in size)")
        p.add_argument("--color-mode", choices=[m for m in zconfig.COLOR_MODES if m], dest="color_mode",
                       help="a user's images converted to grayscale or rgb (default: as stored)")
        p.add_argument("--validation-split", type=_fraction, dest="validation_split", metavar="FRACTION",
                       help="the fraction of a user's data held out to validate on (fixed seed; default 0.1)")
        p.add_argument("--data-dir", help=f"folder of the data files (default ${data.DATA_DIR_ENV})")
        p.add_argument("--batch-size", type=int, dest="batch_size")
        p.add_argument("--binarize", choices=data.BINARIZE)
        p.add_argument("--seed", type=int, default=None)
        p.add_argument("--limit", type=_positive_int, default=None,
                       help="use a random subset of N examples of each split (the same subset every run)")
        p.add_argument("--verbose", type=int, default=1, choices=(0, 1, 2), help="Keras verbosity")
        if checkpoint:
            _weights_source(p)

    p = add_parser("config", help="show a model's full config")
    common(p)
    p.set_defaults(func=cmd_config)

    p = add_parser("train", help="train a model with model.fit")
    common(p)
    p.add_argument("--epochs", type=int)
    p.add_argument("--out", help="run folder (default runs/NAME); rerun the same command to resume an interrupted run")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the run in --out (its files are replaced once the new run has a checkpoint)")
    p.add_argument("--strategy", default="default", choices=distribute.STRATEGIES,
                   help="tf.distribute strategy: one device, all local devices (mirrored), or the workers of "
                        "TF_CONFIG (multi_worker). XLA and steps per execution: --set jit_compile=auto|true|false, "
                        "--set steps_per_execution=N")
    p.add_argument("--timeout", type=_positive_float, metavar="SECONDS",
                   help="multi_worker: give up waiting for the other workers after SECONDS (default: wait)")
    p.add_argument("--kl-warmup", type=_non_negative_int, default=0, metavar="STEPS",
                   help="anneal the KL weight over STEPS")
    p.add_argument("--pretrained", nargs="?", const=True, metavar="TAG",
                   help="start from the shipped pretrained weights of NAME (its default tag, or TAG) and train on")
    p.add_argument("--init-output-bias", action="store_true",
                   help="start the decoder's output bias at the training data's mean image (the log-odds for a "
                        "Bernoulli likelihood), as Burda et al. do; helps tanh MLPs and two-layer models")
    p.add_argument("--vqvae", metavar="CHECKPOINT",
                   help="for a prior over codes (pixelcnn_prior for vq_vae, hierarchical_pixelcnn_prior for "
                        "vq_vae2): the trained VQ-VAE whose codes it learns")
    p.set_defaults(func=cmd_train)

    p = add_parser("evaluate", help="test-set ELBO and its parts")
    common(p, checkpoint=True)
    p.add_argument("--split", default="test")
    p.add_argument("--num-samples", type=_non_negative_int, default=0, metavar="S",
                   help="also estimate log p(x) with S importance samples (e.g. 5000)")
    p.add_argument("--metrics", metavar="NAMES",
                   help="instead: disentanglement metrics of the posterior means, comma-separated from mig, sap, "
                        "dci, modularity, beta_vae_score, factor_vae_score (on --factor-data)")
    p.add_argument("--factor-data", default="sprites_grid", choices=("sprites_grid", "dsprites"),
                   help="--metrics: images with known factors (sprites_grid: vaezoo's own, at the model's size)")
    p.add_argument("--num-examples", type=_positive_int, default=10_000,
                   help="--metrics: examples drawn for mig, sap, dci and modularity (default 10000)")
    p.add_argument("--samples", type=_positive_int, metavar="N",
                   help="instead: sample quality of N samples (FID, KID, precision, recall) against the split's "
                        "images, in a small classifier's feature space (e.g. 10000)")
    p.add_argument("--classifier", metavar="NAME",
                   help="--samples: the feature classifier (default: the data set's, e.g. mnist, sprites)")
    p.add_argument("--prior", metavar="CHECKPOINT",
                   help="--samples of a VQ-VAE: its trained prior to draw the codes (with --pretrained: the shipped one)")
    p.set_defaults(func=cmd_evaluate)

    p = add_parser("sample", help="PNG grids of samples and reconstructions")
    common(p, checkpoint=True)
    p.add_argument("--out", required=True, help="PNG path; reconstructions go beside it")
    p.add_argument("--prior", metavar="CHECKPOINT", help="VQ-VAE only: its trained prior (`vaezoo train PRIOR --vqvae ...`) to draw the codes")
    p.add_argument("--labels", metavar="CLASSES",
                   help="conditional models (cvae): the classes of the sample grid, one row each, e.g. 0-9 or 1,3,5 "
                        "(default: every class)")
    p.add_argument("--traverse", action="store_true",
                   help="also write OUT_traversal.png: each latent dimension swept from -3 to 3 around a real example")
    p.set_defaults(func=cmd_sample)

    p = add_parser("export", help="write a SavedModel (TF Serving layout) or a TFLite model")
    p.add_argument("name", help="registered model name: the served model's name")
    _weights_source(p)
    p.add_argument("--format", required=True, choices=("saved_model", "tflite"))
    p.add_argument("--quantize", choices=[q for q in export.QUANTIZATIONS if q], help="TFLite only")
    p.add_argument("--out", default="exports", help="SavedModels go to OUT/NAME/VERSION, TFLite to OUT/NAME/ "
                                                   "(default: ./exports)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing export of the same path")
    p.add_argument("--version", type=_positive_int, help="SavedModel version (default: the next free one)")
    p.add_argument("--signatures", help="comma-separated endpoints (default: all for SavedModel; "
                                       "encode,decode,sample_from_noise for TFLite)")
    p.add_argument("--prior", metavar="CHECKPOINT", help="VQ-VAE only: its trained prior, exported for sampling")
    p.set_defaults(func=cmd_export)
    return parser


def _weights_source(p) -> None:
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--checkpoint", help="a .keras file written by `vaezoo train`")
    group.add_argument("--pretrained", nargs="?", const=True, metavar="TAG",
                       help="the shipped pretrained weights of NAME (its default tag, or TAG; "
                            "see `vaezoo list --pretrained`)")


class UsageError(ValueError):
    """A mistake in what the user asked for; the CLI prints it as one line."""


#: Errors that are the user's to fix: one line, exit status 2 (``--debug`` shows the traceback).
USER_ERRORS = (ValueError, KeyError, FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError,
               PermissionError, TypeError)
#: Exit status of a run stopped by a non-finite loss.
DIVERGED = 3


def _message(exc: BaseException) -> str:
    if isinstance(exc, KeyError) and exc.args:
        return str(exc.args[0])
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        where = f" while writing {exc.filename}" if exc.filename else ""
        return (f"no space left on the device{where}. Nothing half-written was kept; free some space and rerun the "
                "same command (a training run resumes from its last checkpoint).")
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    previous_format = warnings.formatwarning
    if not args.debug:  # warnings as one line each, like the errors
        warnings.formatwarning = lambda message, category, *rest, **kw: f"vaezoo: warning: {message}\n"
    with _console_log():
        try:
            return _main(argv, args)
        finally:
            warnings.formatwarning = previous_format


class _Console(logging.Handler):
    """The library's progress notes (the ``"vaezoo"`` logger) as the CLI's output: info on stdout, warnings on
    stderr, one line each (the streams are looked up when a note is written, so redirections apply)."""

    def emit(self, record: logging.LogRecord) -> None:
        stream = sys.stdout if record.levelno < logging.WARNING else sys.stderr
        print(record.getMessage(), file=stream, flush=True)


@contextlib.contextmanager
def _console_log():
    logger = logging.getLogger("vaezoo")
    handler, level, propagate = _Console(), logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate


def _main(argv: list[str], args) -> int:
    if args.command == "train" and args.strategy == "multi_worker" and not os.environ.get(_SUPERVISED_ENV):
        return _supervise(argv, args)
    try:
        return args.func(args)
    except callbacks_module.NonFiniteLossError as exc:
        if args.debug:
            raise
        print(f"vaezoo {args.command}: error: {exc}", file=sys.stderr)
        return DIVERGED
    except KeyboardInterrupt:
        if args.debug:
            raise
        print(f"vaezoo {args.command}: interrupted" + ("; rerun the same command to resume from the last checkpoint."
                                                       if args.command == "train" else "."), file=sys.stderr)
        return 130
    except (*USER_ERRORS, OSError) as exc:
        if args.debug or (isinstance(exc, OSError) and type(exc) is not OSError and not isinstance(exc, USER_ERRORS)):
            raise
        print(f"vaezoo {args.command}: error: {_message(exc)}", file=sys.stderr)
        return 2


# ---- multi_worker: a supervisor that can always be interrupted --------------------------------
#
# MultiWorkerMirroredStrategy() blocks in C++, holding the GIL, until every worker of TF_CONFIG has
# connected, and TensorFlow's own SIGTERM handler swallows SIGTERM: no signal handler or thread of
# the waiting process runs. So `vaezoo train --strategy multi_worker` runs the training in a child
# process and supervises it from one that stays responsive: SIGINT/SIGTERM (or --timeout) while the
# child still waits for its peers stop it at once, naming the peers; afterwards signals are passed on.

_SUPERVISED_ENV = "VAEZOO_SUPERVISED_FD"


def _tell_supervisor(message: bytes, last: bool = False) -> None:
    fd = os.environ.get(_SUPERVISED_ENV)
    if fd:
        with contextlib.suppress(OSError):
            os.write(int(fd), message)
            if last:
                os.close(int(fd))
        if last:
            del os.environ[_SUPERVISED_ENV]


def _supervise(argv: list[str], args) -> int:
    peers = distribute.peers()
    waiting_for = ", ".join(peers) or "the workers of TF_CONFIG"
    read_fd, write_fd = os.pipe()
    env = {**os.environ, _SUPERVISED_ENV: str(write_fd)}
    child = subprocess.Popen([sys.executable, "-m", "vaezoo", *argv], env=env, pass_fds=(write_fd,))
    os.close(write_fd)
    caught: list[int] = []
    handlers = {s: signal.signal(s, lambda signum, frame: caught.append(signum)) for s in (signal.SIGINT, signal.SIGTERM)}
    waiting_since, ready, pipe_open = None, False, True
    try:
        while child.poll() is None:
            if pipe_open:
                readable, _, _ = select.select([read_fd], [], [], 0.2)
                if readable:
                    message = os.read(read_fd, 16)
                    pipe_open = bool(message)  # b"": the child closed it (ready, or ending)
                    if b"w" in message:
                        waiting_since = time.monotonic()
                        print(f"vaezoo train: waiting for the other workers to connect ({waiting_for})",
                              file=sys.stderr, flush=True)
                    ready = ready or b"r" in message
            else:
                time.sleep(0.2)
            if caught and not ready:
                _stop(child)
                what = "waiting for the other workers to connect" if waiting_since else "starting"
                print(f"vaezoo train: interrupted while {what} ({waiting_for}).", file=sys.stderr)
                return 128 + caught[0]
            if caught:
                child.send_signal(caught.pop())
            if not ready and waiting_since and args.timeout and time.monotonic() - waiting_since > args.timeout:
                _stop(child)
                print(f"vaezoo train: error: timed out after {args.timeout:g} s waiting for the other workers to "
                      f"connect ({waiting_for}); start them with the same TF_CONFIG cluster, or check the addresses.",
                      file=sys.stderr)
                return 2
        return child.wait()
    finally:
        os.close(read_fd)
        for s, handler in handlers.items():
            signal.signal(s, handler)


def _stop(child: subprocess.Popen) -> None:
    child.kill()  # it cannot handle signals while it waits
    child.wait()


if __name__ == "__main__":
    sys.exit(main())
