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
import os
import select
import shutil
import signal
import subprocess
import sys
import time
import warnings
import zipfile
from pathlib import Path
from typing import Any, Sequence

import keras
import numpy as np
import yaml

import vaezoo
from vaezoo import config as zconfig
from vaezoo import callbacks as callbacks_module
from vaezoo import data, distribute, evaluate, export, fileio, images, plots, runs, training

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
    return data.load(
        cfg["dataset"],
        split=split,
        batch_size=cfg["batch_size"],
        data_dir=args.data_dir,
        binarize=cfg["binarize"],
        shuffle=shuffle,
        seed=args.seed,
        limit=limit,
        image_size=cfg.get("image_size"),
        color_mode=cfg.get("color_mode"),
        validation_split=cfg.get("validation_split", data.sources.DEFAULT_VALIDATION_SPLIT),
        labels=labels,
    )


def _validation_split(cfg) -> str:
    """The split a run validates on and ``sample`` reconstructs: the data set's own (binarized MNIST's
    ``valid``, ``test`` elsewhere) or, for a user's data, the held-out ``validation`` fraction."""
    return data.sources.validation_split_name(cfg["dataset"])


def _fit_user_data(args, cfg, overrides) -> tuple[dict, dict]:
    """For a user's folder or array file: the settings that suit it where the model's defaults assume MNIST
    (no dynamic binarization; a Bernoulli likelihood only for binary images), unless set by the user.
    Returns the config and the overrides with the inferred settings added."""
    if not data.sources.is_user_data(cfg["dataset"]):
        return cfg, overrides
    info = data.source_info(cfg["dataset"], data_dir=args.data_dir, image_size=cfg.get("image_size"),
                            color_mode=cfg.get("color_mode"))
    schema = vaezoo.model_info(args.name).schema
    inferred = {k: v for k, v in data.suggested_config(info).items()
                if k not in overrides and (k in schema or k in zconfig.TRAINING_KEYS) and cfg.get(k) != v}
    if inferred:
        print(f"{cfg['dataset']}: {info['num_examples']} images of {tuple(info['image_shape'])}, "
              f"{'binary' if info['binary'] else 'continuous values'}"
              + (f", {info['num_classes']} classes" if info.get("num_classes") else "")
              + f"; {', '.join(f'{k} {cfg.get(k)} -> {v}' for k, v in inferred.items())}")
        overrides = {**overrides, **inferred}
        cfg = vaezoo.get_config(args.name, **overrides)
    return cfg, overrides


def _config_yaml(cfg) -> str:
    return yaml.safe_dump({k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items()}, sort_keys=False)


def _conditional(model) -> bool:
    """Whether the model reads labels (``cvae``): its data sets are then loaded with them."""
    return bool(getattr(model, "uses_condition", False))


def _first(model, ds, n):
    """The first ``n`` examples of ``ds``: ``(images, model inputs)``, the inputs a dict with the labels for a
    conditional model."""
    batch = next(iter(ds.unbatch().batch(n)))
    if isinstance(batch, (tuple, list)):
        x = batch[0]
        return x, ({"images": x, "labels": batch[1]} if _conditional(model) else x)
    return batch, batch


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


def _write_traversal(model, out_path: Path, test_ds) -> list[Path]:
    """``<name>_traversal.png``: one row per latent dimension, swept from -3 to 3 (continuous latents only)."""
    if test_ds is None or not hasattr(model, "traverse"):
        return []
    _, x = _first(model, test_ds, 1)
    grid = model.traverse(x)
    path = out_path.with_name(out_path.stem + "_traversal" + out_path.suffix)
    return [Path(images.save_grid(grid.reshape(-1, *grid.shape[2:]), path, ncols=grid.shape[1]))]


def _write_samples(model, out_path: Path, test_ds, seed, prior=None, classes=None) -> list[Path]:
    """``samples.png`` (a conditional model's: one row per class of ``classes``, default all), and the
    reconstructions (and uncertainty) of 32 examples of ``test_ds``."""
    if _conditional(model):
        classes = list(range(model.num_classes)) if classes is None else classes
        grid = model.class_grid(per_class=10, seed=seed, classes=classes)
        written = [Path(images.save_grid(grid.reshape(-1, *grid.shape[2:]), out_path, ncols=10))]
    else:
        drawn = model.sample(64, seed=seed, prior=prior) if prior is not None else model.sample(64, seed=seed)
        written = [Path(images.save_grid(np.asarray(drawn), out_path))]
    if test_ds is not None:
        x, inputs = _first(model, test_ds, 32)
        recon = np.asarray(model.reconstruct(inputs))
        pairs = np.stack([np.asarray(x), recon], axis=1).reshape(-1, *x.shape[1:])  # input, reconstruction, ...
        rec_path = out_path.with_name(out_path.stem + "_reconstructions" + out_path.suffix)
        written.append(Path(images.save_grid(pairs, rec_path, ncols=16)))
        if hasattr(model, "reconstruction_uncertainty"):  # random decoder weights (bayesian_vae)
            mean, std = (np.asarray(v) for v in model.reconstruction_uncertainty(x[:16], num_draws=32, seed=seed))
            scaled = std / max(float(std.max()), 1e-12)  # the largest standard deviation shown white
            rows = np.stack([np.asarray(x[:16]), mean, scaled], axis=0).reshape(-1, *x.shape[1:])
            unc_path = out_path.with_name(out_path.stem + "_uncertainty" + out_path.suffix)
            written.append(Path(images.save_grid(rows, unc_path, ncols=16)))
    return written


def _labelled_examples(cfg, args, n: int = 1000):
    """Up to ``n`` validation ``(images, labels)`` for the TensorBoard code scatter, or None without labels."""
    try:
        labelled = _dataset(cfg, _validation_split(cfg), args, shuffle=False, labels=True)
    except (FileNotFoundError, ValueError, data.DataError):
        return None  # a data set without labels: no scatter
    x, y = next(iter(labelled.unbatch().batch(n)))
    return x, np.asarray(y)


def _write_latent_plots(model, out_path: Path, cfg, args) -> list[Path]:
    """The manifold grid of a 2-D Gaussian latent, and the scatter of test codes by class when the data set
    has labels (skipped, with the reason on stderr, when it has none)."""
    written = []
    if plots.has_manifold(model):
        path = out_path.with_name(out_path.stem + "_manifold" + out_path.suffix)
        written.append(Path(images.save_grid(plots.manifold(model, steps=15), path, ncols=15)))
    if not hasattr(model, "code") or getattr(model, "input_kind", "images") != "images":
        return written
    try:
        labelled = _dataset(cfg, _validation_split(cfg), args, shuffle=False, labels=True)
    except (FileNotFoundError, ValueError, data.DataError) as exc:
        print(f"no code scatter: {exc}", file=sys.stderr)
        return written
    codes, labels = plots.codes_and_labels(model, labelled, limit=2000)
    points, explained = plots.project_2d(codes)
    path = out_path.with_name(out_path.stem + "_codes" + out_path.suffix)
    written.append(Path(plots.save_scatter(points, labels, path, class_names=getattr(labelled, "class_names", None))))
    if codes.shape[1] > 2:
        print(f"code scatter: first two principal components of {codes.shape[1]} latents "
              f"({explained:.0%} of the codes' variance)")
    return written


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
    print(_config_yaml(cfg), end="")
    return 0


def _run_description(args, cfg) -> dict[str, Any]:
    """What identifies a run: resuming it with anything else is refused (``epochs`` may grow)."""
    return {"model": args.name,
            "config": yaml.safe_load(_config_yaml(cfg)),
            "args": {"limit": args.limit, "kl_warmup": args.kl_warmup or 0, "vqvae": args.vqvae,
                     **({"pretrained": _pretrained_key(args)} if args.pretrained is not None else {}),
                     **({"init_output_bias": True} if args.init_output_bias else {})}}


def _pretrained_key(args) -> str | None:
    return None if args.pretrained is None else vaezoo.pretrained_info(args.name, args.pretrained).key


def _out_folder(path: str) -> Path:
    out = Path(path)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise UsageError(f"--out {path} is a file, not a folder; pass a folder for the run.") from None
    except NotADirectoryError:
        raise UsageError(f"--out {path} cannot be created: a part of the path is a file, not a folder.") from None
    except PermissionError:
        raise UsageError(f"--out {path} cannot be created: permission denied.") from None
    if not os.access(out, os.W_OK):
        raise UsageError(f"--out {path} is not writable.")
    return out


def _existing_run(out: Path) -> dict | None:
    """The description of the run already in ``out`` (from state.json, else config.yaml), or None."""
    try:
        state = runs.read_state(out)
    except runs.RunError as exc:
        warnings.warn(f"{exc}; checking the run against config.yaml instead.", runs.RunWarning, stacklevel=2)
        state = None
    if state is not None and "config" in state:
        return state
    config_file = out / runs.CONFIG_FILE
    if config_file.is_file():
        try:
            cfg = zconfig.load_yaml(config_file)
        except (zconfig.ConfigError, OSError):
            return None
        return {"config": cfg, "epochs_done": (state or {}).get("epochs_done", 0), "finished": False}
    return None


def cmd_train(args) -> int:
    if args.init_output_bias and (args.pretrained is not None or args.vqvae):
        raise UsageError("--init-output-bias starts a new decoder at the data's mean image; it does not combine with "
                         f"{'--pretrained' if args.pretrained is not None else '--vqvae'} (those weights come trained).")
    overrides = _overrides(args)
    if args.pretrained is not None:  # fine-tune: the architecture and data the weights were trained with
        overrides = {**_pretrained_defaults(args), **overrides}
    cfg = vaezoo.get_config(args.name, **overrides)
    out = _out_folder(args.out or os.path.join("runs", args.name))
    with runs.RunLock(out) as lock:  # before anything in the folder is read or written
        return _train(args, cfg, overrides, out, lock)


def _train(args, cfg, overrides, out: Path, lock: runs.RunLock) -> int:
    fileio.clean_partials(out)  # what a killed writer left (the run's real files are whole)
    if lock.previous and lock.previous.get("pid") != os.getpid():
        print(f"took over the lock of an earlier run that ended without releasing it "
              f"(pid {lock.previous.get('pid')}, started {lock.previous.get('started')})")
    # First, before other TensorFlow ops: MultiWorkerMirroredStrategy must start its cluster then.
    _tell_supervisor(b"w")  # multi_worker: waiting for the other workers starts here ...
    strategy = distribute.strategy(args.strategy)
    _tell_supervisor(b"r", last=True)  # ... and ends here
    if distribute.is_mirrored(strategy):
        print(f"{type(strategy).__name__}: {strategy.num_replicas_in_sync} replicas in sync; "
              f"the global batch of {cfg['batch_size']} is split over them")
    if args.seed is not None:
        keras.utils.set_random_seed(args.seed)
    if args.vqvae is None:
        cfg, overrides = _fit_user_data(args, cfg, overrides)
    labels = bool(getattr(vaezoo.model_info(args.name).builder, "uses_condition", False))  # cvae: (x, y) batches
    if labels and cfg.get("num_labels"):  # m2: a few labelled examples beside the unlabelled rest
        if args.limit:
            raise UsageError(f"--limit does not combine with num_labels={cfg['num_labels']} (the labelled examples "
                             "are drawn from the whole training split); use --set num_labels=0 to train on every "
                             "label, or a smaller data set.")
        train_ds = data.semi_supervised(cfg["dataset"], cfg["num_labels"], batch_size=cfg["batch_size"],
                                        seed=args.seed, data_dir=args.data_dir, binarize=cfg["binarize"],
                                        image_size=cfg.get("image_size"), color_mode=cfg.get("color_mode"),
                                        validation_split=cfg.get("validation_split",
                                                                 data.sources.DEFAULT_VALIDATION_SPLIT))
    else:
        train_ds = _dataset(cfg, "train", args, limit=args.limit, labels=labels)
    val_ds = _dataset(cfg, _validation_split(cfg), args, limit=args.limit, shuffle=False, labels=labels)
    vqvae = None
    if args.vqvae:  # a prior over codes: train on the codes of a trained VQ-VAE
        vqvae = _load_checkpoint(args.vqvae)
        if not hasattr(vqvae, "prior_config"):
            raise UsageError(f"--vqvae {args.vqvae} is a {type(vqvae).__name__}, not a VQ-VAE.")
        tie = vqvae.prior_config()  # the code shapes and codebook size the prior must model
        if not set(tie) <= set(vaezoo.model_info(args.name).schema):
            raise UsageError(
                f"{args.name!r} cannot model the codes of a {type(vqvae).__name__} (--vqvae {args.vqvae}); "
                f"its prior is {vqvae.prior_name!r}: vaezoo train {vqvae.prior_name} --vqvae {args.vqvae}"
            )
        overrides = {**overrides, **tie}
        cfg = vaezoo.get_config(args.name, **overrides)
        train_ds, val_ds = data.codes_dataset(vqvae, train_ds), data.codes_dataset(vqvae, val_ds)
    if "data_shape" in cfg and "data_shape" not in overrides:
        spec = train_ds.element_spec
        shape = tuple((spec[0] if isinstance(spec, tuple) else spec).shape[1:])  # (images, labels) for cvae
        if tuple(cfg["data_shape"]) != shape:
            print(f"data_shape {tuple(cfg['data_shape'])} -> {shape} to match dataset {cfg['dataset']!r}")
            cfg = vaezoo.get_config(args.name, **overrides, data_shape=list(shape))
    builder = vaezoo.model_info(args.name).builder
    if getattr(builder, "dataset_size_from_data", False) and "dataset_size" not in overrides:
        n = data.count_examples(train_ds)  # N of a bound over the whole data set (bayesian_vae)
        if cfg.get("dataset_size") != n:
            print(f"dataset_size {cfg.get('dataset_size')} -> {n}: the number of training examples")
            cfg = {**cfg, "dataset_size": n}

    # The run already in the folder: refuse another config before touching any file; a finished
    # run is left alone unless asked to train longer.
    description = _run_description(args, cfg)
    previous = None if args.overwrite else _existing_run(out)
    if previous is not None:
        differences = runs.config_differences({k: previous.get(k) for k in description if k in previous},
                                              {k: v for k, v in description.items() if k in previous})
        if differences:
            raise UsageError(f"--out {out} holds a run with another config ({'; '.join(differences)}). Resume it with "
                             "its own settings, pass --overwrite to replace it, or use another --out.")
        done = previous.get("epochs_done", 0)
        if previous.get("finished") and cfg["epochs"] <= done and (out / runs.MODEL_FILE).is_file():
            print(f"{out} holds a finished run of {args.name} ({done} epochs); nothing to do. Pass --epochs N with "
                  f"N > {done} to train on, or --overwrite to start again.")
            return 0

    with strategy.scope():
        model = training.compile_model(vaezoo.get(args.name, pretrained=args.pretrained or False, **cfg), cfg)
    if args.init_output_bias:  # a resumed run loads its checkpoint over it
        try:
            training.init_output_bias(model, train_ds)
        except ValueError as e:
            raise UsageError(f"--init-output-bias: {e}") from None

    def write_config(folder):
        fileio.atomic_write_text(folder / runs.CONFIG_FILE, _config_yaml(cfg))

    callbacks = training.standard_callbacks(out, run_info=description, fresh=args.overwrite, on_commit=write_config)
    checkpoint = next(c for c in callbacks if isinstance(c, runs.RunCheckpoint))
    if args.overwrite and (out / "logs").is_dir():
        shutil.rmtree(out / "logs")  # the TensorBoard curves of the replaced run
    if args.kl_warmup:
        callbacks.append(vaezoo.callbacks.KLWarmup(args.kl_warmup))
    callbacks.append(_ReportResume(checkpoint))
    if vqvae is None:  # images in TensorBoard: samples and reconstructions of 8 validation images
        _, examples = _first(model, val_ds, 8)
        callbacks.append(vaezoo.callbacks.ImageSummaries(out / "logs" / "images", examples,
                                                         labelled=_labelled_examples(cfg, args)))
    model.fit(train_ds, epochs=cfg["epochs"], validation_data=val_ds, callbacks=callbacks, verbose=args.verbose)
    with fileio.atomic_path(out / runs.MODEL_FILE) as tmp:
        model.save(tmp)
    if vqvae is not None:  # images decoded from codes that the trained prior draws
        written = _write_samples(vqvae, out / "samples.png", None, args.seed, prior=model)
    else:
        written = _write_samples(model, out / "samples.png", val_ds, args.seed)
        written += _write_traversal(model, out / "samples.png", val_ds)
        written += _write_latent_plots(model, out / "samples.png", cfg, args)
    runs.mark_finished(out, cfg["epochs"])
    print(f"saved {out / runs.MODEL_FILE}; wrote {', '.join(map(str, written))}; TensorBoard logs in {out / 'logs'}")
    return 0


class _ReportResume(keras.callbacks.Callback):
    """Says where a resumed run starts (after RunCheckpoint has restored it)."""

    def __init__(self, checkpoint: runs.RunCheckpoint):
        super().__init__()
        self.checkpoint = checkpoint

    def on_train_begin(self, logs=None):
        if self.checkpoint.restored_from is not None:
            print(f"resuming at epoch {self.checkpoint.epochs_done + 1} from {self.checkpoint.restored_from}")


def _load_checkpoint(path, expect: str | None = None):
    """Load a ``.keras`` file (plugins first, so their classes are known); with ``expect``, refuse a
    checkpoint of another registered model than ``expect``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Checkpoint {str(path)!r} does not exist (expected a .keras file written by vaezoo train).")
    vaezoo.load_plugins()
    try:
        model = keras.models.load_model(path)
    except (OSError, ValueError, TypeError, KeyError, zipfile.BadZipFile) as exc:
        raise UsageError(f"Checkpoint {path} cannot be loaded ({type(exc).__name__}: {str(exc)[:300]}).") from None
    held = getattr(model, "registry_name", None) or model.name
    if expect is not None and held != expect:
        raise UsageError(f"--checkpoint {path} holds a {held!r} model, not {expect!r}; name the model it holds "
                         f"(vaezoo ... {held} --checkpoint {path}) or pass a checkpoint of {expect!r}.")
    if not model.compiled:  # saved before compile(): evaluate() still needs a compiled model
        model.compile()
    return model


def _model(args):
    """The model that ``evaluate``/``sample``/``export`` work on: ``--checkpoint`` or ``--pretrained [TAG]``."""
    if args.pretrained is None:
        return _load_checkpoint(args.checkpoint, expect=args.name)
    model = vaezoo.get(args.name, pretrained=args.pretrained)
    model.compile()
    return model


def _prior(args) -> tuple[Any, str | None]:
    """``--prior CHECKPOINT``, else with ``--pretrained`` the prior shipped with those weights (if any),
    with where it came from (the checkpoint path or the shipped prior's key); ``(None, None)`` if neither."""
    if args.prior:
        return _load_checkpoint(args.prior), args.prior
    if args.pretrained is not None:
        prior = vaezoo.pretrained_info(args.name, args.pretrained).prior
        if prior:
            return vaezoo.get(prior, pretrained=True), prior
    return None, None


def _pretrained_defaults(args) -> dict[str, Any]:
    """With ``--pretrained``: the config of those weights and the data set they were trained and measured on."""
    entry = vaezoo.pretrained_info(args.name, args.pretrained)
    spec = entry.metric["data"]
    return {**entry.config, "dataset": spec["name"], "binarize": spec.get("binarize", "none")}


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
        overrides = {**_pretrained_defaults(args), **overrides}
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
    ds = _dataset(cfg, args.split, args, limit=args.limit, shuffle=False, labels=_conditional(model))
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
        test_ds = _dataset(cfg, _validation_split(cfg), args, shuffle=False, labels=_conditional(model))
    except (FileNotFoundError, data.DataError) as exc:
        print(f"no reconstructions: {exc}", file=sys.stderr)
        test_ds = None
    classes = None
    if args.labels is not None:
        if not _conditional(model):
            raise UsageError(f"--labels picks the classes of a conditional model (cvae); {args.name} ignores labels.")
        classes = parse_labels(args.labels, model.num_classes)
    prior, prior_source = _prior(args)
    written = _write_samples(model, Path(args.out), test_ds, args.seed, prior=prior, classes=classes)
    if args.traverse:
        if not hasattr(model, "traverse"):
            raise UsageError(f"--traverse sweeps continuous latents; {type(model).__name__} has discrete codes.")
        if test_ds is None:
            raise UsageError("--traverse needs the data set to encode an example (see --data-dir).")
        written += _write_traversal(model, Path(args.out), test_ds)
    written += _write_latent_plots(model, Path(args.out), cfg, args)
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
    try:
        return _main(argv, args)
    finally:
        warnings.formatwarning = previous_format


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
