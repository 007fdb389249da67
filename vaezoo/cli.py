"""The ``vaezoo`` command line: list, config, train, evaluate, sample, export.

    vaezoo list ["*vae*"]
    vaezoo config NAME [--set key=value ...]
    vaezoo train NAME [--set key=value ...] [--dataset D] [--epochs N] [--out DIR] [--strategy S]
    vaezoo train vae --set mixed_precision=mixed_bfloat16 --set jit_compile=false --set steps_per_execution=1
    TF_CONFIG='{"cluster": ...}' vaezoo train vae --strategy multi_worker   # on each worker (see README)
    vaezoo evaluate NAME --checkpoint PATH [--dataset D]
    vaezoo sample NAME --checkpoint PATH --out grid.png
    vaezoo train pixelcnn_prior --vqvae runs/vq_vae/model.keras      # a prior over a VQ-VAE's codes
    vaezoo sample vq_vae --checkpoint runs/vq_vae/model.keras --prior runs/pixelcnn_prior/model.keras --out g.png
    vaezoo train hierarchical_pixelcnn_prior --vqvae runs/vq_vae2/model.keras   # the same for VQ-VAE-2
    vaezoo export vae --checkpoint runs/vae/model.keras --format saved_model     # savedmodels/vae/<version>/
    vaezoo export vae --checkpoint runs/vae/model.keras --format tflite --quantize float16

``train`` shows Keras' progress bar, writes TensorBoard logs, a checkpoint after every epoch,
and resumes an interrupted run in the same ``--out`` folder where it stopped.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, Sequence

import keras
import numpy as np
import yaml

import vaezoo
from vaezoo import config as zconfig
from vaezoo import data, distribute, evaluate, export, images, training

VALIDATION_SPLIT = {"binarized_mnist": "valid"}


def _overrides(args) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in args.set or []:
        key, value = zconfig.parse_assignment(item)
        out[key] = value
    for key in ("dataset", "epochs", "batch_size", "binarize"):
        value = getattr(args, key, None)
        if value is not None:
            out[key] = value
    return out


def _dataset(cfg, split, args, limit=None, shuffle=None):
    return data.load(
        cfg["dataset"],
        split=split,
        batch_size=cfg["batch_size"],
        data_dir=args.data_dir,
        binarize=cfg["binarize"],
        shuffle=shuffle,
        seed=args.seed,
        limit=limit,
    )


def _config_yaml(cfg) -> str:
    return yaml.safe_dump({k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items()}, sort_keys=False)


def _write_samples(model, out_path: Path, test_ds, seed, prior=None) -> list[Path]:
    drawn = model.sample(64, seed=seed, prior=prior) if prior is not None else model.sample(64, seed=seed)
    written = [Path(images.save_grid(np.asarray(drawn), out_path))]
    if test_ds is not None:
        x = next(iter(test_ds.unbatch().batch(32)))
        recon = np.asarray(model.reconstruct(x))
        pairs = np.stack([np.asarray(x), recon], axis=1).reshape(-1, *x.shape[1:])  # input, reconstruction, ...
        rec_path = out_path.with_name(out_path.stem + "_reconstructions" + out_path.suffix)
        written.append(Path(images.save_grid(pairs, rec_path, ncols=16)))
    return written


def cmd_list(args) -> int:
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


def cmd_config(args) -> int:
    info = vaezoo.model_info(args.name)
    cfg = vaezoo.get_config(args.name, **_overrides(args))
    print(f"# {args.name}: {info.family} from {info.source}" + (f" ({info.config_path})" if info.config_path else ""))
    print(_config_yaml(cfg), end="")
    return 0


def cmd_train(args) -> int:
    overrides = _overrides(args)
    cfg = vaezoo.get_config(args.name, **overrides)
    # First, before other TensorFlow ops: MultiWorkerMirroredStrategy must start its cluster then.
    strategy = distribute.strategy(args.strategy)
    if distribute.is_mirrored(strategy):
        print(f"{type(strategy).__name__}: {strategy.num_replicas_in_sync} replicas in sync; "
              f"the global batch of {cfg['batch_size']} is split over them")
    if args.seed is not None:
        keras.utils.set_random_seed(args.seed)
    train_ds = _dataset(cfg, "train", args, limit=args.limit)
    val_ds = _dataset(cfg, VALIDATION_SPLIT.get(cfg["dataset"], "test"), args, limit=args.limit, shuffle=False)
    vqvae = None
    if args.vqvae:  # a prior over codes: train on the codes of a trained VQ-VAE
        vqvae = _load_checkpoint(args.vqvae)
        if not hasattr(vqvae, "prior_config"):
            raise ValueError(f"--vqvae {args.vqvae} is a {type(vqvae).__name__}, not a VQ-VAE.")
        tie = vqvae.prior_config()  # the code shapes and codebook size the prior must model
        if not set(tie) <= set(vaezoo.model_info(args.name).schema):
            raise ValueError(
                f"{args.name!r} cannot model the codes of a {type(vqvae).__name__} (--vqvae {args.vqvae}); "
                f"its prior is {vqvae.prior_name!r}: vaezoo train {vqvae.prior_name} --vqvae {args.vqvae}"
            )
        overrides = {**overrides, **tie}
        cfg = vaezoo.get_config(args.name, **overrides)
        train_ds, val_ds = data.codes_dataset(vqvae, train_ds), data.codes_dataset(vqvae, val_ds)
    if "data_shape" in cfg and "data_shape" not in overrides:
        shape = tuple(train_ds.element_spec.shape[1:])
        if tuple(cfg["data_shape"]) != shape:
            print(f"data_shape {tuple(cfg['data_shape'])} -> {shape} to match dataset {cfg['dataset']!r}")
            cfg = vaezoo.get_config(args.name, **overrides, data_shape=list(shape))
    out = Path(args.out or os.path.join("runs", args.name))
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(_config_yaml(cfg))
    with strategy.scope():
        model = training.compile_model(vaezoo.get(args.name, **cfg), cfg)
    callbacks = training.standard_callbacks(out)
    if args.kl_warmup:
        callbacks.append(vaezoo.callbacks.KLWarmup(args.kl_warmup))
    # The tf.data pipeline shuffles itself; shuffle=False only stops Keras warning about it.
    model.fit(
        train_ds, epochs=cfg["epochs"], validation_data=val_ds, callbacks=callbacks, verbose=args.verbose, shuffle=False
    )
    model.save(out / "model.keras")
    if vqvae is not None:  # images decoded from codes that the trained prior draws
        written = _write_samples(vqvae, out / "samples.png", None, args.seed, prior=model)
    else:
        written = _write_samples(model, out / "samples.png", val_ds, args.seed)
    print(f"saved {out / 'model.keras'}; wrote {', '.join(map(str, written))}; TensorBoard logs in {out / 'logs'}")
    return 0


def _load_checkpoint(path):
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Checkpoint {str(path)!r} does not exist (expected a .keras file written by vaezoo train).")
    model = keras.models.load_model(path)
    if not model.compiled:  # saved before compile(): evaluate() still needs a compiled model
        model.compile()
    return model


def cmd_evaluate(args) -> int:
    cfg = vaezoo.get_config(args.name, **_overrides(args))
    model = _load_checkpoint(args.checkpoint)
    if args.num_samples and not hasattr(model, "log_weights"):
        raise ValueError(
            f"--num-samples estimates log p(x) for continuous-latent models (VAE, BetaVAE, IWAE); "
            f"{type(model).__name__} has discrete codes."
        )
    ds = _dataset(cfg, args.split, args, limit=args.limit, shuffle=False)
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


def cmd_sample(args) -> int:
    cfg = vaezoo.get_config(args.name, **_overrides(args))
    model = _load_checkpoint(args.checkpoint)
    try:
        test_ds = _dataset(cfg, VALIDATION_SPLIT.get(cfg["dataset"], "test"), args, shuffle=False)
    except FileNotFoundError as exc:
        print(f"no reconstructions: {exc}", file=sys.stderr)
        test_ds = None
    prior = _load_checkpoint(args.prior) if args.prior else None
    written = _write_samples(model, Path(args.out), test_ds, args.seed, prior=prior)
    print(f"wrote {', '.join(map(str, written))}")
    return 0


def cmd_export(args) -> int:
    model = _load_checkpoint(args.checkpoint)
    builder = vaezoo.model_info(args.name).builder
    if isinstance(builder, type) and not isinstance(model, builder):
        raise ValueError(f"--checkpoint {args.checkpoint} is a {type(model).__name__}, not a {args.name!r} "
                         f"({builder.__name__}); name the export after the model it holds.")
    prior = _load_checkpoint(args.prior) if args.prior else None
    signatures = args.signatures.split(",") if args.signatures else None
    if args.format == "saved_model":
        if args.quantize:
            raise ValueError("--quantize applies to --format tflite; a SavedModel keeps float32 weights.")
        path = export.saved_model(model, args.out, args.version, name=args.name, signatures=signatures, prior=prior)
        names = list(export.load_exported(path).signatures)
    else:
        suffix = f".{args.quantize}" if args.quantize else ""
        path = Path(args.out) / args.name / f"{args.name}{suffix}.tflite"
        path = export.tflite(model, path, signatures or export.DEFAULT_SIGNATURES, quantize=args.quantize, prior=prior)
        names = list(export.load_exported(path).signatures)
    print(f"wrote {path} ({path.stat().st_size if path.is_file() else _folder_size(path)} bytes; "
          f"signatures: {', '.join(names)})")
    return 0


def _folder_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vaezoo", description="A model zoo of variational autoencoders.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("list", help="list registered models and the package each comes from")
    p.add_argument("pattern", nargs="?", default="*", help="fnmatch pattern, e.g. '*vae*'")
    p.set_defaults(func=cmd_list)

    def common(p, checkpoint=False):
        p.add_argument("name", help="registered model name (see `vaezoo list`)")
        p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key (repeatable)")
        p.add_argument("--dataset", help="mnist, binarized_mnist, sprites or tfds:NAME")
        p.add_argument("--data-dir", help=f"folder of the data files (default ${data.DATA_DIR_ENV})")
        p.add_argument("--batch-size", type=int, dest="batch_size")
        p.add_argument("--binarize", choices=data.BINARIZE)
        p.add_argument("--seed", type=int, default=None)
        p.add_argument("--limit", type=int, default=None, help="use only the first N examples")
        p.add_argument("--verbose", type=int, default=1, choices=(0, 1, 2), help="Keras verbosity")
        if checkpoint:
            p.add_argument("--checkpoint", required=True, help="a .keras file written by `vaezoo train`")

    p = sub.add_parser("config", help="show a model's full config")
    common(p)
    p.set_defaults(func=cmd_config)

    p = sub.add_parser("train", help="train a model with model.fit")
    common(p)
    p.add_argument("--epochs", type=int)
    p.add_argument("--out", help="run folder (default runs/NAME); rerun to resume an interrupted run")
    p.add_argument("--strategy", default="default", choices=distribute.STRATEGIES,
                   help="tf.distribute strategy: one device, all local devices (mirrored), or the workers of "
                        "TF_CONFIG (multi_worker). XLA and steps per execution: --set jit_compile=auto|true|false, "
                        "--set steps_per_execution=N")
    p.add_argument("--kl-warmup", type=int, default=0, metavar="STEPS", help="anneal the KL weight over STEPS")
    p.add_argument("--vqvae", metavar="CHECKPOINT",
                   help="for a prior over codes (pixelcnn_prior for vq_vae, hierarchical_pixelcnn_prior for "
                        "vq_vae2): the trained VQ-VAE whose codes it learns")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="test-set ELBO and its parts")
    common(p, checkpoint=True)
    p.add_argument("--split", default="test")
    p.add_argument("--num-samples", type=int, default=0, metavar="S",
                   help="also estimate log p(x) with S importance samples (e.g. 5000)")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("sample", help="PNG grids of samples and reconstructions")
    common(p, checkpoint=True)
    p.add_argument("--out", required=True, help="PNG path; reconstructions go beside it")
    p.add_argument("--prior", metavar="CHECKPOINT", help="VQ-VAE only: its trained prior (`vaezoo train PRIOR --vqvae ...`) to draw the codes")
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("export", help="write a SavedModel (TF Serving layout) or a TFLite model")
    p.add_argument("name", help="registered model name: the served model's name")
    p.add_argument("--checkpoint", required=True, help="a .keras file written by `vaezoo train`")
    p.add_argument("--format", required=True, choices=("saved_model", "tflite"))
    p.add_argument("--quantize", choices=[q for q in export.QUANTIZATIONS if q], help="TFLite only")
    p.add_argument("--out", default="savedmodels", help="SavedModels go to OUT/NAME/VERSION, TFLite to OUT/NAME/")
    p.add_argument("--version", type=int, help="SavedModel version (default: the next free one)")
    p.add_argument("--signatures", help="comma-separated endpoints (default: all for SavedModel; "
                                       "encode,decode,sample_from_noise for TFLite)")
    p.add_argument("--prior", metavar="CHECKPOINT", help="VQ-VAE only: its trained prior, exported for sampling")
    p.set_defaults(func=cmd_export)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (KeyError, ValueError, FileNotFoundError, FileExistsError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"vaezoo {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
