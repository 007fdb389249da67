"""What the commands share: config overrides from the arguments, the data of a config, the model and prior
that ``evaluate``/``sample``/``export`` work on (``--checkpoint`` or ``--pretrained``), ``--labels``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

import vaezoo
from vaezoo import config as zconfig
from vaezoo import data, runs, trainer
from vaezoo.cli.errors import UsageError


def overrides(args) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in args.set or []:
        key, value = zconfig.parse_assignment(item)
        out[key] = value
    for key in ("dataset", "epochs", "batch_size", "binarize", "image_size", "color_mode", "validation_split"):
        value = getattr(args, key, None)
        if value is not None:
            out[key] = value
    return out


def dataset(cfg, split, args, limit=None, shuffle=None, labels=False):
    return data.from_config(cfg, split, data_dir=args.data_dir, seed=args.seed, limit=limit, shuffle=shuffle,
                            labels=labels)


def validation_split(cfg) -> str:
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


def model_from(args):
    """The model that ``evaluate``/``sample``/``export`` work on: ``--checkpoint`` or ``--pretrained [TAG]``."""
    if args.pretrained is None:
        return trainer.load_checkpoint(args.checkpoint, expect=args.name)
    model = vaezoo.get(args.name, pretrained=args.pretrained)
    model.compile()
    return model


def prior_from(args) -> tuple[Any, str | None]:
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
RUN_DATA_KEYS = ("dataset", "binarize", "image_size", "color_mode", "validation_split")


def run_data_defaults(args) -> dict[str, Any]:
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
            return {k: recorded[k] for k in RUN_DATA_KEYS if k in recorded} if isinstance(recorded, dict) else {}
    return {}


def data_config(args) -> dict[str, Any]:
    """The config whose data ``evaluate``/``sample`` read: with ``--pretrained``, the weights' own data set;
    with a ``--checkpoint`` of a run folder, that run's data; options given on the command line win."""
    given = overrides(args)
    if getattr(args, "pretrained", None) is not None:
        given = {**trainer.pretrained_defaults(args.name, args.pretrained), **given}
    else:
        given = {**run_data_defaults(args), **given}
    return vaezoo.get_config(args.name, **given)
