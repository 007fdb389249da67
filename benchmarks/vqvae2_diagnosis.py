"""Why the shipped ``vq_vae2.mnist`` draws strokes, not digits: where the digit's identity sits in its codes.

For the test images (MNIST, dynamically binarized once with seed 12345, the pretrained metric's data) it measures

* the reconstruction NLL -log p(x | top, bottom) with each image's own codes, with the top codes of another
  image (a fixed permutation of the batch) and with the bottom codes of another image: which level the
  decoder reads;
* how often the MNIST classifier (``vaezoo.metrics``, 98.9% on binarized test digits) gives the reconstruction
  the image's own label, and how often the label of the image the swapped codes came from: which level holds
  the identity;
* the shipped prior's NLL of the codes split into top and bottom (``nll_top``, ``nll_bottom``): where the
  prior spends its nats;
* the classifier's confidence on samples of ``vq_vae2`` and, for comparison, of ``vq_vae`` (each with its
  shipped prior): the share of samples with a top class probability above 0.9.

    python benchmarks/vqvae2_diagnosis.py --data-dir ../shared/data --out docs/vq_vae2/diagnosis.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import vaezoo  # noqa: E402
from vaezoo import data, metrics  # noqa: E402


def bernoulli_nll(x, p) -> np.ndarray:
    p = np.clip(np.asarray(p, np.float64), 1e-7, 1 - 1e-7)
    return -(x * np.log(p) + (1 - x) * np.log1p(-p)).sum(axis=(1, 2, 3))


def diagnose(args) -> dict:
    start = time.monotonic()
    ds = data.load("mnist", "test", batch_size=500, binarize="dynamic", seed=12345, limit=args.limit,
                   data_dir=args.data_dir, shuffle=False, labels=True)
    batches = [(x.numpy(), y.numpy()) for x, y in ds]
    x = np.concatenate([b[0] for b in batches])
    y = np.concatenate([b[1] for b in batches])
    vq2 = vaezoo.get("vq_vae2", pretrained=True)
    classifier = metrics.FeatureExtractor(metrics.load_classifier("mnist"))
    perm = np.random.default_rng(0).permutation(len(x))
    top, bottom = (np.concatenate(parts) for parts in zip(*(
        [np.asarray(c) for c in vq2.encode(x[i:i + 500])] for i in range(0, len(x), 500))))

    def decoded(t, b):
        return np.concatenate([np.asarray(vq2.decode_indices(t[i:i + 500], b[i:i + 500]))
                               for i in range(0, len(x), 500)])

    cases = {"own codes": (top, bottom), "top of another image": (top[perm], bottom),
             "bottom of another image": (top, bottom[perm])}
    result = {"examples": int(len(x)), "classifier_accuracy_on_the_images": None, "cases": {}}
    result["classifier_accuracy_on_the_images"] = round(float((classifier.predict(x).argmax(1) == y).mean()), 4)
    for name, (t, b) in cases.items():
        recon = decoded(t, b)
        predicted = classifier.predict(recon).argmax(1)
        result["cases"][name] = {
            "reconstruction_nll": round(float(bernoulli_nll(x, recon).mean()), 3),
            "label_of_the_image": round(float((predicted == y).mean()), 4),
            "label_of_the_other_image": round(float((predicted == y[perm]).mean()), 4),
        }
    prior = vaezoo.get(vaezoo.pretrained_info("vq_vae2").prior, pretrained=True)
    prior.compile()
    codes = data.codes_dataset(vq2, data.load("mnist", "test", batch_size=500, binarize="dynamic", seed=12345,
                                              limit=args.limit, data_dir=args.data_dir, shuffle=False))
    result["prior"] = {k: round(float(v), 3) for k, v in prior.evaluate(codes, return_dict=True, verbose=0).items()}
    result["code_maps"] = {"top": list(top.shape[1:]), "bottom": list(bottom.shape[1:]), "num_codes": vq2.num_codes,
                           "top_capacity_nats": round(float(np.prod(top.shape[1:]) * np.log(vq2.num_codes)), 1),
                           "bottom_capacity_nats": round(float(np.prod(bottom.shape[1:]) * np.log(vq2.num_codes)), 1)}
    samples = {}
    for name in ("vq_vae2", "vq_vae"):
        model = vaezoo.get(name, pretrained=True)
        model_prior = vaezoo.get(vaezoo.pretrained_info(name).prior, pretrained=True)
        t0 = time.monotonic()
        drawn = np.asarray(model.sample(args.samples, seed=0, prior=model_prior))
        probabilities = classifier.predict(drawn)
        samples[name] = {"samples": args.samples, "confident_share": round(float((probabilities.max(1) > 0.9).mean()), 4),
                         "mean_top_probability": round(float(probabilities.max(1).mean()), 4),
                         "classes_drawn": np.bincount(probabilities.argmax(1), minlength=10).tolist(),
                         "seconds": round(time.monotonic() - t0, 1)}
    result["samples"] = samples
    result["seconds"] = round(time.monotonic() - start, 1)
    return result


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=os.environ.get("VAEZOO_DATA_DIR", "../shared/data"))
    p.add_argument("--limit", type=int, default=2000, help="test images (a fixed random subset)")
    p.add_argument("--samples", type=int, default=200)
    p.add_argument("--out", help="write the JSON here")
    args = p.parse_args(argv)
    result = diagnose(args)
    text = json.dumps(result, indent=1)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
