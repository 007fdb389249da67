"""``vaezoo sample``: sample grids, reconstructions, traversals and latent plots."""

from __future__ import annotations

import sys
from pathlib import Path

from vaezoo import data, pictures
from vaezoo.cli import common
from vaezoo.cli.errors import UsageError


def cmd_sample(args) -> int:
    cfg = common.data_config(args)
    model = common.model_from(args)
    try:
        test_ds = common.dataset(cfg, common.validation_split(cfg), args, shuffle=False, labels=pictures.conditional(model))
    except (FileNotFoundError, data.DataError) as exc:
        print(f"no reconstructions: {exc}", file=sys.stderr)
        test_ds = None
    classes = None
    if args.labels is not None:
        if not pictures.conditional(model):
            raise UsageError(f"--labels picks the classes of a conditional model (cvae); {args.name} ignores labels.")
        classes = common.parse_labels(args.labels, model.num_classes)
    prior, prior_source = common.prior_from(args)
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
