"""``vaezoo list`` (models, or the shipped weights with ``--pretrained``) and ``vaezoo config``."""

from __future__ import annotations

import vaezoo
from vaezoo import trainer
from vaezoo.cli import common


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
    cfg = vaezoo.get_config(args.name, **common.overrides(args))
    print(f"# {args.name}: {info.family} from {info.source}" + (f" ({info.config_path})" if info.config_path else ""))
    print(trainer.config_yaml(cfg), end="")
    return 0
