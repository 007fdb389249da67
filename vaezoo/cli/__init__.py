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

One module per command (``listing``, ``train``, ``evaluate``, ``sample``, ``export``) over shared helpers
(``common``), the parser (``parser``, light: ``--help`` needs no TensorFlow) and the errors (``errors``); the
library does the work (``vaezoo.train`` for a run). ``train`` shows Keras' progress bar, writes TensorBoard
logs and a crash-safe run folder (:mod:`vaezoo.runs`), and resumes an interrupted run in the same ``--out``
folder where it stopped. A mistake is one line on stderr and exit status 2 (``--debug`` shows the traceback);
a run stopped by a non-finite loss exits with 3. The library's progress notes (the ``"vaezoo"`` logger) are
printed here.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings
from typing import Sequence

from vaezoo.cli import errors
from vaezoo.cli.errors import DIVERGED, USER_ERRORS, UsageError
from vaezoo.cli.parser import build_parser

__all__ = ["DIVERGED", "USER_ERRORS", "UsageError", "build_parser", "main", "parse_labels"]


def __getattr__(name):
    if name == "parse_labels":  # in common, which imports the library (TensorFlow)
        from vaezoo.cli.common import parse_labels

        return parse_labels
    raise AttributeError(f"module 'vaezoo.cli' has no attribute {name!r}")


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
    import importlib

    from vaezoo import callbacks as callbacks_module  # after parsing: --help never imports TensorFlow

    module = importlib.import_module(f"vaezoo.cli.{args.run[0]}")
    if args.command == "train" and args.strategy == "multi_worker" and not os.environ.get(module.SUPERVISED_ENV):
        return module.supervise(argv, args)
    try:
        return getattr(module, args.run[1])(args)
    except callbacks_module.NonFiniteLossError as exc:
        if args.debug:
            raise
        print(f"vaezoo {args.command}: error: {exc}", file=sys.stderr)
        return errors.DIVERGED
    except KeyboardInterrupt:
        if args.debug:
            raise
        print(f"vaezoo {args.command}: interrupted" + ("; rerun the same command to resume from the last checkpoint."
                                                       if args.command == "train" else "."), file=sys.stderr)
        return 130
    except (*errors.USER_ERRORS, OSError) as exc:
        if args.debug or (isinstance(exc, OSError) and type(exc) is not OSError and not isinstance(exc, errors.USER_ERRORS)):
            raise
        print(f"vaezoo {args.command}: error: {errors.message(exc)}", file=sys.stderr)
        return 2
