"""``vaezoo export``: a SavedModel in TF Serving's layout or a TFLite model."""

from __future__ import annotations

from pathlib import Path

import vaezoo
from vaezoo import export
from vaezoo.cli import common


def cmd_export(args) -> int:
    vaezoo.model_info(args.name)  # an unknown name fails here, with close names
    model = common.model_from(args)
    prior, _ = common.prior_from(args)
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
