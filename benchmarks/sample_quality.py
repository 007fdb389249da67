"""The generation table: FID, KID, precision and recall of every shipped model's samples (``vaezoo.metrics``).

For each shipped pretrained model (``vaezoo.list_pretrained()``; the priors over codes are measured through the
VQ-VAE they sample for), ``--num-samples`` images from ``model.sample`` (the means E[x|z] at prior codes; a
VQ-VAE's codes from its shipped prior) are compared with the real test images of its data in the feature space
of the data set's shipped classifier: the 10,000 grey MNIST test images for every MNIST model (the fixed-binarized
ones too, so that all MNIST rows share one reference), the 2,000 test sprites for the sprites model. The first rows
are the floors: as many real training images against the same test images.

    python benchmarks/sample_quality.py --out docs/sample_quality --data-dir ../shared/data
    python benchmarks/sample_quality.py --only vae.mnist_dynamic --num-samples 2000 --out /tmp/q   # a quick look
    python benchmarks/sample_quality.py --out docs/sample_quality --samplers gmm flow --sampler-only

``--samplers`` adds rows ``KEY + gmm`` / ``KEY + flow``: the model's samples with z drawn from an ex-post sampler
(``vaezoo.samplers.fit_sampler``, defaults: 10 full-covariance components by EM; a MAF of 2 steps of MADE 128-128,
50 epochs) fitted to the posterior means of its training images (binarized once with seed 0 for the dynamically
binarized models), Ghosh et al. 2020's ex-post density estimation.

Writes ``summary.json`` (every figure, the settings and the seconds per row) and ``table.md``; rows already in
``summary.json`` are kept (``--only`` adds or replaces rows).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

import vaezoo  # noqa: E402
from vaezoo import data, fileio, images, metrics, samplers  # noqa: E402

#: Shipped models that are priors over another model's codes, measured through that model.
PRIORS = {"pixelcnn_prior", "hierarchical_pixelcnn_prior"}


def real_sets(data_dir, num_samples: int) -> dict[str, dict]:
    """Per classifier: the real test images and a floor set of training images (as many as the samples)."""
    rng = np.random.default_rng(0)
    test, _ = data.mnist_arrays("test", data_dir)
    train, _ = data.mnist_arrays("train", data_dir)
    sprites_test, _ = data.sprites_arrays("test")
    sprites_train, _ = data.sprites_arrays("train")
    return {
        "mnist": {"real": test, "real_name": "MNIST test (10,000, grey)",
                  "floor": train[rng.choice(len(train), min(num_samples, len(train)), replace=False)],
                  "floor_name": "MNIST train images"},
        "sprites": {"real": np.asarray(sprites_test), "real_name": "sprites test (2,000)",
                    "floor": np.asarray(sprites_train)[rng.choice(len(sprites_train), min(num_samples, 2000),
                                                                   replace=False)],
                    "floor_name": "sprites train images"},
    }


def training_images(entry, data_dir) -> np.ndarray:
    """The images a shipped model was trained on, as its encoder saw them: MNIST binarized once (seed 0) for the
    dynamically binarized models, the fixed binarization's training split, the training sprites."""
    name = entry.metric["data"]["name"]
    if name == "mnist":
        train, _ = data.mnist_arrays("train", data_dir)
        return (np.random.default_rng(0).uniform(size=train.shape) < train).astype(np.float32)
    if name == "binarized_mnist":
        return data.binarized_mnist_arrays("train", data_dir)
    return np.asarray(data.sprites_arrays("train")[0])


def sampler_row(key, entry, kind, sets, extractors, features, rows, args) -> None:
    """The row 'KEY + KIND': ``kind`` fitted to the posterior means of the training images, then sampled."""
    model = vaezoo.get(key, pretrained=True)
    try:
        samplers.check_model(model)
    except samplers.SamplerError as exc:
        print(f"{key} + {kind}: skipped ({exc})", flush=True)
        return
    classifier = metrics.default_classifier(entry.metric["data"]["name"])
    start = time.monotonic()
    fit = samplers.fit_sampler(model, training_images(entry, args.data_dir), kind, seed=args.seed)
    fitting = time.monotonic() - start
    generated = metrics.draw_samples(model, args.num_samples, seed=args.seed, sampler=kind)
    quality = metrics.sample_quality(generated, sets[classifier]["real"], classifier=extractors[classifier],
                                     real_features=features[classifier], seed=args.seed)
    name = f"{key} + {kind}"
    rows[name] = row(name, quality, time.monotonic() - start, reference=sets[classifier]["real_name"],
                     sampler={"kind": kind, "num_codes": fit.num_codes, "train_log_prob": round(fit.train_log_prob, 3),
                              "validation_log_prob": round(fit.validation_log_prob, 3), "iterations": fit.iterations,
                              "fit_seconds": round(fitting, 1)})
    if args.grids:
        images.save_grid(generated[:64], Path(args.out) / f"{key}+{kind}.png")
    print(f"{name}: {metrics.describe(quality)} ({time.monotonic() - start:.0f} s; held-out code log-density "
          f"{fit.validation_log_prob:.2f})", flush=True)
    save(rows, Path(args.out) / "summary.json", Path(args.out), args, None)


def save(rows: dict, summary_path: Path, out: Path, args, argv) -> None:
    """``summary.json`` and ``table.md`` of the rows so far (written after every row: a stopped run keeps them,
    and ``--only`` reruns just the missing ones)."""
    ordered = sorted(rows.values(), key=lambda r: (not r.get("floor", False), r["model"]))
    settings = {"num_samples": args.num_samples, "seed": args.seed, "k": 3, "kid_blocks": 10,
                "samples": "model.sample: E[x|z] at prior codes (a VQ-VAE's codes from its shipped prior)",
                "classifiers": {n: {k: metrics.classifier_info(n)[k] for k in ("sha256", "test_accuracy")}
                                for n in ("mnist", "sprites")},
                "command": "python benchmarks/sample_quality.py " + " ".join(
                    a for a in (argv or sys.argv[1:]) if not a.startswith("--data-dir") and a != args.data_dir)}
    fileio.atomic_write_text(summary_path, json.dumps({"settings": settings, "rows": ordered}, indent=1) + "\n")
    fileio.atomic_write_text(out / "table.md", table(ordered, args.num_samples))


def row(name, quality, seconds, **extra) -> dict:
    return {"model": name, **quality.as_dict(), "seconds": round(seconds, 1), **extra}


def table(rows: list[dict], num_samples: int) -> str:
    lines = ["| model | reference | FID | KID | precision | recall | samples |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['reference']} | {r['fid']:.2f} | {r['kid']:.2f} +- "
                     f"{r['kid_standard_error']:.2f} | {r['precision']:.3f} | {r['recall']:.3f} | "
                     f"{r['num_generated']} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="docs/sample_quality")
    p.add_argument("--data-dir", default=os.environ.get("VAEZOO_DATA_DIR"))
    p.add_argument("--num-samples", type=int, default=10_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--only", nargs="+", help="these pretrained keys (and the floors)")
    p.add_argument("--grids", action="store_true", help="also write a 64-sample grid per model (OUT/NAME.png)")
    p.add_argument("--table-only", action="store_true", help="rewrite table.md from summary.json")
    p.add_argument("--samplers", nargs="*", default=[], choices=list(samplers.KINDS),
                   help="also rows 'KEY + KIND': an ex-post sampler fitted to the codes of the training images")
    p.add_argument("--sampler-only", action="store_true", help="only the sampler rows (keep the others)")
    args = p.parse_args(argv)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    summary_path = out / "summary.json"
    if args.table_only:
        fileio.atomic_write_text(out / "table.md", table(json.loads(summary_path.read_text())["rows"],
                                                         args.num_samples))
        return 0
    previous = json.loads(summary_path.read_text())["rows"] if summary_path.exists() else []
    rows = {r["model"]: r for r in previous}
    sets = real_sets(args.data_dir, args.num_samples)
    extractors = {name: metrics.FeatureExtractor(name) for name in sets}
    features = {name: extractors[name](s["real"]) for name, s in sets.items()}

    for name, s in sets.items():
        start = time.monotonic()
        quality = metrics.sample_quality(s["floor"], s["real"], classifier=extractors[name],
                                         real_features=features[name], seed=args.seed)
        rows[f"floor: {s['floor_name']}"] = row(f"floor: {s['floor_name']}", quality, time.monotonic() - start,
                                                reference=s["real_name"], floor=True)
        print(f"floor {name}: {metrics.describe(quality)}", flush=True)
    save(rows, summary_path, out, args, argv)

    keys = args.only or [k for k in vaezoo.list_pretrained() if k.split(".")[0] not in PRIORS]
    for key in keys:
        entry = vaezoo.pretrained_info(key)
        for kind in args.samplers:
            sampler_row(key, entry, kind, sets, extractors, features, rows, args)
        if args.sampler_only:
            continue
        classifier = metrics.default_classifier(entry.metric["data"]["name"])
        model = vaezoo.get(key, pretrained=True)
        prior = vaezoo.get(entry.prior, pretrained=True) if entry.prior else None
        start = time.monotonic()
        generated = metrics.draw_samples(model, args.num_samples, seed=args.seed, prior=prior)
        sampling = time.monotonic() - start
        quality = metrics.sample_quality(generated, sets[classifier]["real"], classifier=extractors[classifier],
                                         real_features=features[classifier], seed=args.seed)
        rows[key] = row(key, quality, time.monotonic() - start, reference=sets[classifier]["real_name"],
                        sampling_seconds=round(sampling, 1), prior=entry.prior)
        if args.grids:
            images.save_grid(generated[:64], out / f"{key}.png")
        print(f"{key}: {metrics.describe(quality)} ({time.monotonic() - start:.0f} s)", flush=True)
        save(rows, summary_path, out, args, argv)

    save(rows, summary_path, out, args, argv)
    print(f"wrote {summary_path} and {out / 'table.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
