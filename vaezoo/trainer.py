"""The crash-safe training run, from Python: ``vaezoo.train(name, data, out=..., epochs=...)``.

What ``vaezoo train`` does, as a library call: lock the run folder, check a run already in it (another config
is refused before any file is touched; a finished run is left alone unless asked for more epochs), build and
compile the model, fit with the run's callbacks (atomic checkpoints every epoch, history, TensorBoard curves
and images, non-finite guard), resume an interrupted run where it stopped, save ``model.keras``, write the
sample pictures, and mark the run finished. The CLI parses its arguments and calls :func:`train`; progress
notes go to the ``"vaezoo"`` logger (the CLI prints them), never to stdout.

Example:

>>> import vaezoo
>>> result = vaezoo.train("beta_vae_conv", "sprites", out="runs/beta", epochs=2, seed=0)   # doctest: +SKIP
>>> result.model, result.out, result.written                                               # doctest: +SKIP
(<BetaVAE ...>, PosixPath('runs/beta'), [PosixPath('runs/beta/samples.png'), ...])
>>> result = vaezoo.train("beta_vae_conv", "sprites", out="runs/beta", epochs=4)            # doctest: +SKIP
>>> result.resumed_from                     # trains epochs 3 and 4 only              # doctest: +SKIP
PosixPath('runs/beta/checkpoints/epoch-0002.keras')

References: Keras' ``BackupAndRestore`` callback (the resume semantics), timm's ``train.py`` (a run folder
per experiment, its config beside the checkpoints).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import warnings
import zipfile
from pathlib import Path
from typing import Any, Callable, Mapping

import keras
import yaml

from vaezoo import callbacks as callbacks_module
from vaezoo import config as zconfig
from vaezoo import data, distribute, fileio, pictures, registry, runs, training
from vaezoo import pretrained as _pretrained

log = logging.getLogger("vaezoo")


class RunConflictError(runs.RunError):
    """The output folder holds a run with another config (resume it with its own settings, or overwrite)."""


@dataclasses.dataclass
class TrainResult:
    """What :func:`train` did.

    Attributes:
        model: the trained model (also saved as ``out/model.keras``); None when ``already_finished``.
        out: the run folder.
        config: the model's full config, as recorded in ``out/config.yaml``.
        written: the pictures written (samples, reconstructions, traversal, latent plots).
        resumed_from: the checkpoint an interrupted run resumed from, or None.
        already_finished: the folder held a finished run with at least ``epochs`` epochs: nothing was trained
            (its model is ``out/model.keras``).
    """

    model: Any
    out: Path
    config: dict
    written: list = dataclasses.field(default_factory=list)
    resumed_from: Path | None = None
    already_finished: bool = False


def config_yaml(cfg: Mapping[str, Any]) -> str:
    """A config as the YAML that ``config.yaml`` of a run holds."""
    return yaml.safe_dump({k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items()}, sort_keys=False)


def run_description(name: str, cfg: Mapping[str, Any], *, limit=None, kl_warmup=0, vqvae=None, pretrained=None,
                    init_output_bias=False) -> dict[str, Any]:
    """What identifies a run: resuming it with anything else is refused (``epochs`` may grow)."""
    key = None if pretrained in (None, False) else _pretrained.pretrained_info(name, pretrained).key
    return {"model": name,
            "config": yaml.safe_load(config_yaml(cfg)),
            "args": {"limit": limit, "kl_warmup": kl_warmup or 0, "vqvae": None if vqvae is None else str(vqvae),
                     **({"pretrained": key} if key is not None else {}),
                     **({"init_output_bias": True} if init_output_bias else {})}}


def existing_run(out: str | os.PathLike) -> dict | None:
    """The description of the run already in ``out`` (from state.json, else config.yaml), or None."""
    out = Path(out)
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



def arg(name: str) -> str:
    """How an argument of :func:`train` is named in a message: the keyword and the CLI flag that sets it
    (``out= (--out)``), so a Python caller and a CLI user both read the name they typed."""
    flag = "--set" if name == "overrides" else "--" + name.replace("_", "-")
    return f"{name}= ({flag})"

def out_folder(path: str | os.PathLike) -> Path:
    """``path`` as a writable run folder (created), or a ValueError saying why not."""
    out = Path(path)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise ValueError(f"{arg('out')} {path} is a file, not a folder; pass a folder for the run.") from None
    except NotADirectoryError:
        raise ValueError(f"{arg('out')} {path} cannot be created: a part of the path is a file, "
                         "not a folder.") from None
    except PermissionError:
        raise ValueError(f"{arg('out')} {path} cannot be created: permission denied.") from None
    if not os.access(out, os.W_OK):
        raise ValueError(f"{arg('out')} {path} is not writable.")
    return out


def load_checkpoint(path: str | os.PathLike, expect: str | None = None):
    """Load a ``.keras`` file (plugins first, so their classes are known), compiled; with ``expect``, refuse a
    checkpoint of another registered model than ``expect``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Checkpoint {str(path)!r} does not exist (expected a .keras file written by vaezoo train).")
    registry.load_plugins()
    try:
        model = keras.models.load_model(path)
    except (OSError, ValueError, TypeError, KeyError, zipfile.BadZipFile) as exc:
        raise ValueError(f"Checkpoint {path} cannot be loaded ({type(exc).__name__}: {str(exc)[:300]}).") from None
    held = getattr(model, "registry_name", None) or model.name
    if expect is not None and held != expect:
        raise ValueError(f"Checkpoint {path} holds a {held!r} model, not {expect!r}; name the model it holds "
                         f"(vaezoo ... {held} --checkpoint {path}) or pass a checkpoint of {expect!r}.")
    if not model.compiled:  # saved before compile(): evaluate() still needs a compiled model
        model.compile()
    return model


def fit_user_data(name: str, cfg: dict, overrides: dict, data_dir=None) -> tuple[dict, dict]:
    """For a user's folder or array file: the settings that suit it where the model's defaults assume MNIST
    (no dynamic binarization; a Bernoulli likelihood only for binary images), unless set by the user.
    Returns the config and the overrides with the inferred settings added."""
    if not data.sources.is_user_data(cfg["dataset"]):
        return cfg, overrides
    info = data.source_info(cfg["dataset"], data_dir=data_dir, image_size=cfg.get("image_size"),
                            color_mode=cfg.get("color_mode"))
    schema = registry.model_info(name).schema
    inferred = {k: v for k, v in data.suggested_config(info).items()
                if k not in overrides and (k in schema or k in zconfig.TRAINING_KEYS) and cfg.get(k) != v}
    if inferred:
        log.info(f"{cfg['dataset']}: {info['num_examples']} images of {tuple(info['image_shape'])}, "
                 f"{'binary' if info['binary'] else 'continuous values'}"
                 + (f", {info['num_classes']} classes" if info.get("num_classes") else "")
                 + f"; {', '.join(f'{k} {cfg.get(k)} -> {v}' for k, v in inferred.items())}")
        overrides = {**overrides, **inferred}
        cfg = registry.get_config(name, **overrides)
    return cfg, overrides


def _ensure_source(dataset) -> str:
    if isinstance(dataset, (str, os.PathLike)):
        return os.fspath(dataset)
    raise TypeError(f"train() reads its data from a source it can load again to resume (a registered name such as "
                    f"'mnist', 'tfds:NAME', a folder of images or an .npz/.npy file), got a {type(dataset).__name__}; "
                    "save arrays with numpy.savez(path, x=images, y=labels) and pass the path.")


def train(name: str, dataset=None, *, out: str | os.PathLike | None = None, epochs: int | None = None,
          overrides: Mapping[str, Any] | None = None, seed: int | None = None, limit: int | None = None,
          data_dir: str | os.PathLike | None = None, strategy=None, pretrained: bool | str | None = None,
          vqvae: str | os.PathLike | None = None, kl_warmup: int = 0, init_output_bias: bool = False,
          overwrite: bool = False, verbose="auto", on_strategy: Callable[[str], None] | None = None) -> TrainResult:
    """Train the registered model ``name`` in the crash-safe run folder ``out``, resuming it if interrupted.

    Args:
        name: a registered model (``vaezoo.list_models()``).
        dataset: the data source (a registered name, ``tfds:NAME``, a folder of images, an ``.npz``/``.npy``
            file; see :func:`vaezoo.data.load`); default the model's config ``dataset``.
        out: the run folder (default ``runs/<name>``). Rerunning the same call resumes an interrupted run; a
            finished run is left as it is unless ``epochs`` grows.
        epochs: total epochs of the run (default the config's).
        overrides: config keys (``{"beta": 4.0, "batch_size": 64}``), validated against the model's schema.
        seed: the global seed (weights, shuffling, binarization).
        limit: train and validate on a fixed random subset of ``limit`` examples.
        data_dir: where data files are (default ``$VAEZOO_DATA_DIR``).
        strategy: a ``tf.distribute`` strategy or its name (``"mirrored"``, ``"multi_worker"``; see
            :func:`vaezoo.distribute.strategy`).
        pretrained: fine-tune the shipped weights (True: the default tag, or a tag), with their architecture
            and data.
        vqvae: a ``.keras`` VQ-VAE whose codes a prior over codes (``pixelcnn_prior``, ...) is trained on.
        kl_warmup: steps of a linear KL warm-up (:class:`vaezoo.callbacks.KLWarmup`).
        init_output_bias: start the decoder's output bias at the data's mean (Burda et al. 2016).
        overwrite: replace a run already in ``out`` instead of resuming it.
        verbose: Keras' ``fit`` verbosity.
        on_strategy: called with ``"wait"`` before and ``"ready"`` after the strategy is made (the CLI's
            multi-worker supervisor listens there).

    Returns:
        A :class:`TrainResult`.

    Raises:
        KeyError / vaezoo.ConfigError: unknown model or config key.
        RunConflictError: ``out`` holds a run with another config.
        vaezoo.runs.RunLockedError: another process trains in ``out``.
        vaezoo.callbacks.NonFiniteLossError: the loss diverged (the last good checkpoint is kept).
        ValueError, FileNotFoundError, vaezoo.data.DataError: bad data or arguments (each names the fix).
    """
    if init_output_bias and (pretrained not in (None, False) or vqvae):
        raise ValueError(f"{arg('init_output_bias')} starts a new decoder at the data's mean image; it does not "
                         f"combine with {arg('pretrained') if pretrained not in (None, False) else arg('vqvae')} (those "
                         "weights come trained).")
    overrides = dict(overrides or {})
    if dataset is not None:
        overrides["dataset"] = _ensure_source(dataset)
    if epochs is not None:
        overrides["epochs"] = epochs
    if pretrained not in (None, False):  # fine-tune: the architecture and data the weights were trained with
        overrides = {**pretrained_defaults(name, pretrained), **overrides}
    cfg = registry.get_config(name, **overrides)
    out = out_folder(out if out is not None else os.path.join("runs", name))
    with runs.RunLock(out) as lock:  # before anything in the folder is read or written
        return _train(name, cfg, overrides, out, lock, seed=seed, limit=limit, data_dir=data_dir, strategy=strategy,
                      pretrained=pretrained, vqvae=vqvae, kl_warmup=kl_warmup, init_output_bias=init_output_bias,
                      overwrite=overwrite, verbose=verbose, on_strategy=on_strategy or (lambda stage: None))


def pretrained_defaults(name: str, pretrained: bool | str) -> dict[str, Any]:
    """The config of the shipped weights ``name`` (tag ``pretrained``) and the data set they were measured on."""
    entry = _pretrained.pretrained_info(name, pretrained)
    spec = entry.metric["data"]
    return {**entry.config, "dataset": spec["name"], "binarize": spec.get("binarize", "none")}


def _train(name, cfg, overrides, out: Path, lock: runs.RunLock, *, seed, limit, data_dir, strategy, pretrained,
           vqvae, kl_warmup, init_output_bias, overwrite, verbose, on_strategy) -> TrainResult:
    fileio.clean_partials(out)  # what a killed writer left (the run's real files are whole)
    if lock.previous and lock.previous.get("pid") != os.getpid():
        log.info(f"took over the lock of an earlier run that ended without releasing it "
                 f"(pid {lock.previous.get('pid')}, started {lock.previous.get('started')})")
    # First, before other TensorFlow ops: MultiWorkerMirroredStrategy must start its cluster then.
    on_strategy("wait")
    if strategy is None or isinstance(strategy, str):
        strategy = distribute.strategy(strategy or "default")
    on_strategy("ready")
    if distribute.is_mirrored(strategy):
        log.info(f"{type(strategy).__name__}: {strategy.num_replicas_in_sync} replicas in sync; "
                 f"the global batch of {cfg['batch_size']} is split over them")
    if seed is not None:
        keras.utils.set_random_seed(seed)
    if vqvae is None:
        cfg, overrides = fit_user_data(name, cfg, overrides, data_dir)
    load = dict(data_dir=data_dir, seed=seed)
    labels = bool(getattr(registry.model_info(name).builder, "uses_condition", False))  # cvae: (x, y) batches
    if labels and cfg.get("num_labels"):  # m2: a few labelled examples beside the unlabelled rest
        if limit:
            raise ValueError(f"{arg('limit')} does not combine with num_labels={cfg['num_labels']} (the labelled "
                             "examples are drawn from the whole training split); set num_labels=0 to train on every "
                             "label, or a smaller data set.")
        train_ds = data.semi_supervised(cfg["dataset"], cfg["num_labels"], batch_size=cfg["batch_size"],
                                        seed=seed, data_dir=data_dir, binarize=cfg["binarize"],
                                        image_size=cfg.get("image_size"), color_mode=cfg.get("color_mode"),
                                        validation_split=cfg.get("validation_split",
                                                                 data.sources.DEFAULT_VALIDATION_SPLIT))
    else:
        train_ds = data.from_config(cfg, "train", limit=limit, labels=labels, **load)
    val_split = data.sources.validation_split_name(cfg["dataset"])
    val_ds = data.from_config(cfg, val_split, limit=limit, shuffle=False, labels=labels, **load)
    vq_model = None
    if vqvae:  # a prior over codes: train on the codes of a trained VQ-VAE
        vq_model = load_checkpoint(vqvae)
        if not hasattr(vq_model, "prior_config"):
            raise ValueError(f"{arg('vqvae')} {vqvae} is a {type(vq_model).__name__}, not a VQ-VAE.")
        tie = vq_model.prior_config()  # the code shapes and codebook size the prior must model
        if not set(tie) <= set(registry.model_info(name).schema):
            raise ValueError(
                f"{name!r} cannot model the codes of a {type(vq_model).__name__} ({arg('vqvae')} {vqvae}); "
                f"its prior is {vq_model.prior_name!r}: vaezoo train {vq_model.prior_name} --vqvae {vqvae}"
            )
        overrides = {**overrides, **tie}
        cfg = registry.get_config(name, **overrides)
        train_ds, val_ds = data.codes_dataset(vq_model, train_ds), data.codes_dataset(vq_model, val_ds)
    if "data_shape" in cfg and "data_shape" not in overrides:
        spec = train_ds.element_spec
        shape = tuple((spec[0] if isinstance(spec, tuple) else spec).shape[1:])  # (images, labels) for cvae
        if tuple(cfg["data_shape"]) != shape:
            log.info(f"data_shape {tuple(cfg['data_shape'])} -> {shape} to match dataset {cfg['dataset']!r}")
            cfg = registry.get_config(name, **overrides, data_shape=list(shape))
    builder = registry.model_info(name).builder
    if getattr(builder, "dataset_size_from_data", False) and "dataset_size" not in overrides:
        n = data.count_examples(train_ds)  # N of a bound over the whole data set (bayesian_vae)
        if cfg.get("dataset_size") != n:
            log.info(f"dataset_size {cfg.get('dataset_size')} -> {n}: the number of training examples")
            cfg = {**cfg, "dataset_size": n}

    # The run already in the folder: refuse another config before touching any file; a finished
    # run is left alone unless asked to train longer.
    description = run_description(name, cfg, limit=limit, kl_warmup=kl_warmup, vqvae=vqvae, pretrained=pretrained,
                                  init_output_bias=init_output_bias)
    previous = None if overwrite else existing_run(out)
    if previous is not None:
        differences = runs.config_differences({k: previous.get(k) for k in description if k in previous},
                                              {k: v for k, v in description.items() if k in previous})
        if differences:
            raise RunConflictError(f"{arg('out')} {out} holds a run with another config ({'; '.join(differences)}). "
                                   f"Resume it with its own settings, pass {arg('overwrite')} to replace it, or use "
                                   "another folder.")
        done = previous.get("epochs_done", 0)
        if previous.get("finished") and cfg["epochs"] <= done and (out / runs.MODEL_FILE).is_file():
            log.info(f"{out} holds a finished run of {name} ({done} epochs); nothing to do. Pass {arg('epochs')} N "
                     f"with N > {done} to train on, or {arg('overwrite')} to start again.")
            return TrainResult(model=None, out=out, config=yaml.safe_load(config_yaml(cfg)), already_finished=True)

    with strategy.scope():
        model = training.compile_model(registry.get(name, pretrained=pretrained or False, **cfg), cfg)
    if init_output_bias:  # a resumed run loads its checkpoint over it
        try:
            training.init_output_bias(model, train_ds)
        except ValueError as e:
            raise ValueError(f"{arg('init_output_bias')}: {e}") from None

    def write_config(folder):
        fileio.atomic_write_text(folder / runs.CONFIG_FILE, config_yaml(cfg))

    callbacks = training.standard_callbacks(out, run_info=description, fresh=overwrite, on_commit=write_config)
    checkpoint = next(c for c in callbacks if isinstance(c, runs.RunCheckpoint))
    if overwrite and (out / "logs").is_dir():
        shutil.rmtree(out / "logs")  # the TensorBoard curves of the replaced run
    if kl_warmup:
        callbacks.append(callbacks_module.KLWarmup(kl_warmup))
    callbacks.append(_ReportResume(checkpoint))
    if vq_model is None:  # images in TensorBoard: samples and reconstructions of 8 validation images
        _, examples = pictures.first_examples(model, val_ds, 8)
        callbacks.append(callbacks_module.ImageSummaries(out / "logs" / "images", examples,
                                                         labelled=pictures.labelled_examples(cfg, **load)))
    model.fit(train_ds, epochs=cfg["epochs"], validation_data=val_ds, callbacks=callbacks, verbose=verbose)
    with fileio.atomic_path(out / runs.MODEL_FILE) as tmp:
        model.save(tmp)
    if vq_model is not None:  # images decoded from codes that the trained prior draws
        written = pictures.write_samples(vq_model, out / "samples.png", None, seed, prior=model)
    else:
        written = pictures.write_samples(model, out / "samples.png", val_ds, seed)
        written += pictures.write_traversal(model, out / "samples.png", val_ds)
        written += pictures.write_latent_plots(model, out / "samples.png", cfg, **load)
    runs.mark_finished(out, cfg["epochs"])
    return TrainResult(model=model, out=out, config=yaml.safe_load(config_yaml(cfg)), written=written,
                       resumed_from=checkpoint.restored_from)


class _ReportResume(keras.callbacks.Callback):
    """Logs where a resumed run starts (after RunCheckpoint has restored it)."""

    def __init__(self, checkpoint: runs.RunCheckpoint):
        super().__init__()
        self.checkpoint = checkpoint

    def on_train_begin(self, logs=None):
        if self.checkpoint.restored_from is not None:
            log.info(f"resuming at epoch {self.checkpoint.epochs_done + 1} from {self.checkpoint.restored_from}")
