"""The ``vaezoo`` argument parser: built from light modules only, so ``vaezoo --help`` and each command's
``--help`` answer without importing TensorFlow. Each command names the module of ``vaezoo.cli`` (and its
function) that runs it: ``args.run = (module, function)``."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from typing import Sequence

from vaezoo import config as zconfig
from vaezoo.version import __version__

#: The commands, in the order ``vaezoo --help`` lists them.
COMMANDS = ("list", "config", "train", "evaluate", "sample", "export")


def help_only(argv: Sequence[str] | None = None) -> bool:
    """Whether this process is the ``vaezoo`` command asked only for help or the version (``vaezoo --help``,
    ``vaezoo train -h``, ``python -m vaezoo --version``): then ``vaezoo/__init__`` skips the library (and
    TensorFlow) and the parser answers in a fraction of a second."""
    if not launched_as_cli():
        return False
    args = list(sys.argv[1:] if argv is None else argv)
    flags = {"-h", "--help", "--version"}
    return bool(args) and bool(flags & set(args)) and all(a in flags or a in COMMANDS for a in args)


def launched_as_cli() -> bool:
    """Whether this process is the ``vaezoo`` console script or ``python -m vaezoo``."""
    orig = list(getattr(sys, "orig_argv", []))
    as_module = any(a == "-m" and b == "vaezoo" for a, b in zip(orig, orig[1:]))
    return as_module or os.path.basename(sys.argv[0] if sys.argv else "") == "vaezoo"


@contextlib.contextmanager
def quiet_tensorflow():
    """For the command line (not ``--debug``): TensorFlow's C++ start-up lines are not the CLI's output (the
    oneDNN and CUDA notices its libraries write to the stderr file descriptor while they load, before any
    logging is set up, and ``failed call to cuInit`` on a machine without a GPU). Around the import of
    TensorFlow, file descriptor 2 goes to /dev/null and ``TF_CPP_MIN_LOG_LEVEL`` is set to 3 (a user's own
    setting wins); Python's errors are reported as always (an import error is raised after the block)."""
    if not launched_as_cli() or "--debug" in sys.argv[1:]:
        yield
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


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
    parser.add_argument("--version", action="version", version=f"vaezoo {__version__}")
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
    p.set_defaults(run=("listing", "cmd_list"))

    def common(p, checkpoint=False):
        p.add_argument("name", help="registered model name (see `vaezoo list`)")
        p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key (repeatable)")
        p.add_argument("--data", "--dataset", dest="dataset", metavar="SOURCE",
                       help="the data: a registered data set (mnist, binarized_mnist, sprites, sprites_grid, or a plugin's), "
                            "tfds:NAME, a folder of images, or an .npz/.npy file")
        p.add_argument("--image-size", type=_positive_int, nargs=2, metavar=("HEIGHT", "WIDTH"), dest="image_size",
                       help="a user's images: centre-crop to the aspect ratio, then resize (needed when a folder's "
                            "images differ in size)")
        p.add_argument("--color-mode", choices=[m for m in zconfig.COLOR_MODES if m], dest="color_mode",
                       help="a user's images converted to grayscale or rgb (default: as stored)")
        p.add_argument("--validation-split", type=_fraction, dest="validation_split", metavar="FRACTION",
                       help="the fraction of a user's data held out to validate on (fixed seed; default 0.1)")
        p.add_argument("--data-dir", help=f"folder of the data files (default ${zconfig.DATA_DIR_ENV})")
        p.add_argument("--batch-size", type=int, dest="batch_size")
        p.add_argument("--binarize", choices=zconfig.BINARIZE)
        p.add_argument("--seed", type=int, default=None)
        p.add_argument("--limit", type=_positive_int, default=None,
                       help="use a random subset of N examples of each split (the same subset every run)")
        p.add_argument("--verbose", type=int, default=1, choices=(0, 1, 2), help="Keras verbosity")
        if checkpoint:
            _weights_source(p)

    p = add_parser("config", help="show a model's full config")
    common(p)
    p.set_defaults(run=("listing", "cmd_config"))

    p = add_parser("train", help="train a model with model.fit")
    common(p)
    p.add_argument("--epochs", type=int)
    p.add_argument("--out", help="run folder (default runs/NAME); rerun the same command to resume an interrupted run")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the run in --out (its files are replaced once the new run has a checkpoint)")
    p.add_argument("--strategy", default="default", choices=zconfig.STRATEGIES,
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
    p.set_defaults(run=("train", "cmd_train"))

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
    p.set_defaults(run=("evaluate", "cmd_evaluate"))

    p = add_parser("sample", help="PNG grids of samples and reconstructions")
    common(p, checkpoint=True)
    p.add_argument("--out", required=True, help="PNG path; reconstructions go beside it")
    p.add_argument("--prior", metavar="CHECKPOINT", help="VQ-VAE only: its trained prior (`vaezoo train PRIOR --vqvae ...`) to draw the codes")
    p.add_argument("--labels", metavar="CLASSES",
                   help="conditional models (cvae): the classes of the sample grid, one row each, e.g. 0-9 or 1,3,5 "
                        "(default: every class)")
    p.add_argument("--traverse", action="store_true",
                   help="also write OUT_traversal.png: each latent dimension swept from -3 to 3 around a real example")
    p.set_defaults(run=("sample", "cmd_sample"))

    p = add_parser("export", help="write a SavedModel (TF Serving layout) or a TFLite model")
    p.add_argument("name", help="registered model name: the served model's name")
    _weights_source(p)
    p.add_argument("--format", required=True, choices=("saved_model", "tflite"))
    p.add_argument("--quantize", choices=[q for q in zconfig.QUANTIZATIONS if q], help="TFLite only")
    p.add_argument("--out", default="exports", help="SavedModels go to OUT/NAME/VERSION, TFLite to OUT/NAME/ "
                                                   "(default: ./exports)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing export of the same path")
    p.add_argument("--version", type=_positive_int, help="SavedModel version (default: the next free one)")
    p.add_argument("--signatures", help="comma-separated endpoints (default: all for SavedModel; "
                                       "encode,decode,sample_from_noise for TFLite)")
    p.add_argument("--prior", metavar="CHECKPOINT", help="VQ-VAE only: its trained prior, exported for sampling")
    p.set_defaults(run=("export", "cmd_export"))
    return parser


def _weights_source(p) -> None:
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--checkpoint", help="a .keras file written by `vaezoo train`")
    group.add_argument("--pretrained", nargs="?", const=True, metavar="TAG",
                       help="the shipped pretrained weights of NAME (its default tag, or TAG; "
                            "see `vaezoo list --pretrained`)")
