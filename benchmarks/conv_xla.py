"""Why XLA trains the conv VAE slower on a CPU: the same model with and without XLA, under TensorFlow's and XLA's
CPU back-end switches.

``vae_conv`` (registry config, batch 128, 32 steps per execution) is timed with ``jit_compile=True`` and ``False``
in a fresh process per variant (the switches are read once, when TensorFlow starts):

* ``TF defaults``: TensorFlow's own kernels use oneDNN (``TF_ENABLE_ONEDNN_OPTS`` on, the default on x86);
* ``oneDNN off``: ``TF_ENABLE_ONEDNN_OPTS=0``, TensorFlow's kernels fall back to Eigen, as XLA's CPU convolutions
  do by default: if the no-XLA row then drops to the XLA row's speed, oneDNN's convolutions are the difference;
* one variant per XLA CPU flag of ``--xla-flags`` (default: ``--xla_cpu_use_onednn=true`` and
  ``--xla_cpu_use_xnnpack=true``): XLA with a faster library for its convolutions, where this TensorFlow's XLA has
  the flag (an unknown flag aborts its process; the row then records the error).

Rounds alternate over the variants (``--rounds``), and each process times both settings side by side; the
report is the median examples/s per variant and setting, and per round the ratio XLA / no XLA.

    python benchmarks/conv_xla.py --rounds 3 --out docs/conv_xla.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from _report import add_output_args, emit, print_report

BATCH = 128
DEFAULT_XLA_FLAGS = ("--xla_cpu_use_onednn=true", "--xla_cpu_use_xnnpack=true")


def measure_here(seconds: float, model_name: str) -> dict:
    """In this process: examples/s of ``model_name`` with XLA and without (one measurement each)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import numpy as np

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import vaezoo
    from throughput import Config, batch_for, in_memory

    configs = []
    for jit in (True, False):
        keras.utils.set_random_seed(0)
        model = vaezoo.get(model_name, seed=0)
        model.compile(keras.optimizers.Adam(1e-3), jit_compile=jit, steps_per_execution=32)
        configs.append(Config(model_name, "XLA" if jit else "no XLA", model,
                              in_memory(batch_for(model, np.random.default_rng(0)))))
    for c in configs:
        c.warm_up(seconds)
    for c in configs:
        c.measure()
    return {c.setting: c.rates[0] for c in configs}


def variants(xla_flags) -> dict[str, dict]:
    out = {"TF defaults": {}, "oneDNN off": {"TF_ENABLE_ONEDNN_OPTS": "0"}}
    out.update({f"XLA_FLAGS={flag}": {"XLA_FLAGS": flag} for flag in xla_flags})
    return out


def run(rounds: int, seconds: float, model_name: str, xla_flags) -> dict:
    table = variants(xla_flags)
    rates: dict[str, dict[str, list[float]]] = {v: {"XLA": [], "no XLA": []} for v in table}
    errors: dict[str, str] = {}
    for _ in range(rounds):
        for name, env in table.items():
            if name in errors:
                continue
            proc = subprocess.run([sys.executable, __file__, "--child", "--seconds", str(seconds),
                                   "--model", model_name], env={**os.environ, **env}, capture_output=True, text=True)
            lines = [line for line in proc.stdout.splitlines() if line.startswith("RATES")]
            if proc.returncode or not lines:
                errors[name] = (proc.stderr.strip().splitlines() or ["no output"])[-1][-300:]
                continue
            for setting, rate in json.loads(lines[-1][5:]).items():
                rates[name][setting].append(rate)
    rows = []
    for name, by_setting in rates.items():
        if name in errors:
            rows.append({"variant": name, "error": errors[name]})
            continue
        ratios = [a / b for a, b in zip(by_setting["XLA"], by_setting["no XLA"])]
        rows.append({"variant": name, "env": table[name],
                     "xla_examples_per_s": round(statistics.median(by_setting["XLA"])),
                     "no_xla_examples_per_s": round(statistics.median(by_setting["no XLA"])),
                     "xla_over_no_xla": round(statistics.median(ratios), 3),
                     "rounds": {k: [round(r) for r in v] for k, v in by_setting.items()}})
    return {"model": model_name, "batch": BATCH, "rounds": rounds, "seconds": seconds, "rows": rows,
            "cpus": os.cpu_count()}


def render_markdown(result: dict) -> str:
    lines = ["| variant | XLA (examples/s) | no XLA (examples/s) | XLA / no XLA (median per round) |",
             "| --- | ---: | ---: | ---: |"]
    for r in result["rows"]:
        if "error" in r:
            lines.append(f"| {r['variant']} | failed: {r['error']} | | |")
        else:
            lines.append(f"| {r['variant']} | {r['xla_examples_per_s']} | {r['no_xla_examples_per_s']} | "
                         f"{r['xla_over_no_xla']:.2f}x |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=3.0, help="target seconds per measurement")
    p.add_argument("--model", default="vae_conv")
    p.add_argument("--xla-flags", nargs="*", default=list(DEFAULT_XLA_FLAGS), help="one XLA variant per flag")
    add_output_args(p)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.report:
        return print_report(args.report, render_markdown)
    if args.child:
        print("RATES" + json.dumps(measure_here(args.seconds, args.model)))
        return 0
    return emit(run(args.rounds, args.seconds, args.model, args.xla_flags), render_markdown, args.out)


if __name__ == "__main__":
    sys.exit(main())
