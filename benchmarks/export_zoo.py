"""Sizes, accuracy and decode latency of the pretrained zoo's exports (SavedModel vs TFLite variants).

For every model in ``savedmodels/MANIFEST.json``: the SavedModel's size; TFLite files converted
from that SavedModel (float32, float16 and dynamic-range quantised; builtin ops only) with their
sizes and the max abs difference of each float output of their signatures (encode, decode,
sample_from_noise) from the SavedModel's outputs on the same inputs (for code indices: the fraction
of codes that differ) (the first 64 test images of the model's data set; codes and latents from
``encode``; seeded noise); and the latency per example of ``decode`` in TensorFlow (the SavedModel
signature) and in LiteRT (``ai_edge_litert`` interpreter), at batch 1 and batch 64 (median of
repeats, after warm-up; both through ``vaezoo.load_exported``, numpy in and out).

    python benchmarks/export_zoo.py --data-dir ../shared/data --out docs/export_zoo.json   # + a markdown table
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

import vaezoo  # noqa: E402
from vaezoo import data  # noqa: E402
from vaezoo.export.litert import DEFAULT_SIGNATURES, convert_saved_model  # noqa: E402

ZOO = Path(__file__).resolve().parents[1] / "savedmodels"


def _inputs(exported, images: np.ndarray, batch: int, rng) -> dict:
    """Inputs of each TFLite signature for ``batch`` examples, from real images where it matters."""
    x = images[:batch]
    encoded = exported.encode(images=x)
    out = {"encode": {"images": x}}
    out["decode"] = ({"z": encoded["mean"]} if "mean" in encoded else encoded)
    noise = {}
    for key, (shape, _) in exported.signatures["sample_from_noise"].items():
        shape = (batch, *shape[1:])
        vq = "codes" in str(exported.signatures["decode"])
        noise[key] = (rng.uniform(size=shape) if vq or key == "component_noise" else rng.normal(size=shape))
        noise[key] = noise[key].astype("float32")
    out["sample_from_noise"] = noise
    return out


def _latency(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--zoo", default=str(ZOO))
    parser.add_argument("--data-dir", default=os.environ.get(data.DATA_DIR_ENV, "../shared/data"))
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--out", help="also write the rows as JSON here (e.g. docs/export_zoo.json)")
    args = parser.parse_args()
    zoo = Path(args.zoo)
    manifest = json.loads((zoo / "MANIFEST.json").read_text())
    rows = []
    for name, entry in manifest["models"].items():
        saved = vaezoo.load_exported(zoo / name / "1")
        rng = np.random.default_rng(0)
        spec = {**entry["data"], "limit": 64, "batch_size": 64}  # a fixed random 64 test images of its data set
        images = next(iter(data.load(spec.pop("name"), spec.pop("split"), data_dir=args.data_dir, shuffle=False,
                                     **spec))).numpy()
        inputs = _inputs(saved, images, 64, rng)
        reference = {sig: saved(sig, **ins) for sig, ins in inputs.items()}
        row = {"model": name, "family": entry["family"], "saved_model_bytes": entry["saved_model_bytes"]}
        with tempfile.TemporaryDirectory() as tmp:
            for quantize in (None, "float16", "dynamic_range"):
                tag = quantize or "float32"
                path = Path(tmp) / f"{tag}.tflite"
                path.write_bytes(convert_saved_model(saved.path, DEFAULT_SIGNATURES, quantize))
                lite = vaezoo.load_exported(path)
                row[f"tflite_{tag}_bytes"] = path.stat().st_size
                errors, mismatched = {}, {}
                for sig, ins in inputs.items():
                    got = lite(sig, **ins)
                    for key, want in reference[sig].items():
                        if np.issubdtype(want.dtype, np.integer):  # code indices: how many differ
                            mismatched[f"{sig}/{key}"] = float(np.mean(got[key] != want))
                        else:
                            errors[f"{sig}/{key}"] = float(np.max(np.abs(got[key].astype("float64") - want)))
                row[f"tflite_{tag}_max_abs_error"] = errors
                if mismatched:
                    row[f"tflite_{tag}_fraction_of_codes_that_differ"] = mismatched
                if quantize is None:
                    for batch in (1, 64):
                        z = {k: v[:batch] for k, v in inputs["decode"].items()}
                        row[f"decode_ms_per_example_litert_b{batch}"] = round(
                            1e3 * _latency(lambda: lite("decode", **z), args.repeats) / batch, 4)
                        row[f"decode_ms_per_example_tf_b{batch}"] = round(
                            1e3 * _latency(lambda: saved("decode", **z), args.repeats) / batch, 4)
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1) + "\n")
    print(markdown(rows))


def markdown(rows: list[dict]) -> str:
    """The table of docs/results.md: sizes, errors of the TFLite variants, ``decode`` latency."""
    def mb(n):
        return f"{n / 1e6:.2f}"

    def worst(errors: dict, signature: str | None = None) -> str:
        values = [v for k, v in errors.items() if signature is None or k.startswith(signature + "/")]
        return f"{max(values):.1e}" if values else "-"

    lines = ["| model | SavedModel MB | TFLite MB f32 / f16 / dyn | size ratio f16 / dyn | max abs err f32 (all "
             "signatures) | max abs err f16 / dyn (`decode`) | codes that differ f16 / dyn (`encode`) | `decode` ms "
             "per example, batch 1: TF / LiteRT | batch 64: TF / LiteRT |", "| --- " * 9 + "|"]
    for r in rows:
        f32, f16, dyn = (r[f"tflite_{t}_bytes"] for t in ("float32", "float16", "dynamic_range"))
        codes = [r.get(f"tflite_{t}_fraction_of_codes_that_differ", {}) for t in ("float16", "dynamic_range")]
        differ = " / ".join(f"{100 * max(c.values()):.1f}%" for c in codes) if all(codes) else "-"
        lines.append(
            f"| {r['model']} | {mb(r['saved_model_bytes'])} | {mb(f32)} / {mb(f16)} / {mb(dyn)} | {f16 / f32:.2f} / "
            f"{dyn / f32:.2f} | {worst(r['tflite_float32_max_abs_error'])} | "
            f"{worst(r['tflite_float16_max_abs_error'], 'decode')} / "
            f"{worst(r['tflite_dynamic_range_max_abs_error'], 'decode')} | {differ} | "
            f"{r['decode_ms_per_example_tf_b1']:.3f} / {r['decode_ms_per_example_litert_b1']:.3f} | "
            f"{r['decode_ms_per_example_tf_b64']:.3f} / {r['decode_ms_per_example_litert_b64']:.3f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
