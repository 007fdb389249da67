"""Train the feature classifier of the sample-quality metrics (``vaezoo.metrics``) and ship it.

``mnist``: the 60,000 MNIST training images with their digit labels; each image is binarized (x ~ Bernoulli(x))
with probability one half, so that the features see both the grey test images and the binary samples of the
Bernoulli models alike. ``sprites``: the 20,000 procedural training sprites with their shape factor (square,
ellipse, heart) as the label. The architecture is ``vaezoo.metrics.build_classifier`` (about 125,000 weights at 28x28);
Adam 1e-3, batch 128, a fixed seed. The test accuracy (grey and binarized test images for MNIST) goes into
``vaezoo/weights/classifiers/manifest.json`` with the weights' sha256 and this command.

    python benchmarks/train_classifier.py --dataset mnist --epochs 8 --data-dir ../shared/data
    python benchmarks/train_classifier.py --dataset sprites --epochs 8
    python benchmarks/train_classifier.py --dataset mnist --epochs 1 --out /tmp/classifiers   # a try, not shipped
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from vaezoo import data, fileio, metrics, pretrained  # noqa: E402


def arrays(name: str, split: str, data_dir):
    if name == "mnist":
        images, labels = data.mnist_arrays(split, data_dir)
        return images, labels, [str(i) for i in range(10)]
    if name == "sprites":
        images, factors = data.sprites_arrays(split)
        return np.asarray(images), factors["shape"].astype(np.int64), list(data.SPRITE_SHAPES)
    raise SystemExit(f"--dataset {name!r}: valid choices: mnist, sprites")


def training_data(images, labels, batch_size: int, seed: int, binarize_half: bool) -> tf.data.Dataset:
    ds = tf.data.Dataset.from_tensor_slices((images, labels)).shuffle(len(images), seed=seed)
    ds = ds.batch(batch_size, drop_remainder=True)
    if binarize_half:
        def augment(x, y):
            u = tf.random.uniform(tf.shape(x), seed=seed)
            pick = tf.random.uniform([tf.shape(x)[0], 1, 1, 1], seed=seed + 1) < 0.5
            return tf.where(pick, tf.cast(u < x, tf.float32), x), y

        ds = ds.map(augment, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def accuracy(model, images, labels) -> float:
    logits = model.predict(images, batch_size=1000, verbose=0)
    return float(np.mean(np.argmax(logits, -1) == labels))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="mnist", choices=["mnist", "sprites"])
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--learning-rate", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", default=os.environ.get("VAEZOO_DATA_DIR"))
    p.add_argument("--out", default=str(metrics.CLASSIFIERS_DIR), help="folder of the weights and manifest.json")
    args = p.parse_args(argv)

    keras.utils.set_random_seed(args.seed)
    x, y, class_names = arrays(args.dataset, "train", args.data_dir)
    x_test, y_test, _ = arrays(args.dataset, "test", args.data_dir)
    model = metrics.build_classifier(x.shape[1:], len(class_names))
    model.compile(keras.optimizers.Adam(args.learning_rate),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    start = time.monotonic()
    history = model.fit(training_data(x, y, args.batch_size, args.seed, args.dataset == "mnist"),
                        epochs=args.epochs, verbose=2)
    seconds = time.monotonic() - start

    results = {"test_accuracy": round(accuracy(model, x_test, y_test), 4)}
    if args.dataset == "mnist":
        rng = np.random.default_rng(12345)
        binary = (rng.uniform(size=x_test.shape) < x_test).astype(np.float32)
        results["test_accuracy_binarized"] = round(accuracy(model, binary, y_test), 4)
    print(json.dumps(results))

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    file = f"{args.dataset}.weights.h5"
    shipped = metrics.build_classifier(x.shape[1:], len(class_names))  # the weights alone, no optimizer state
    shipped.set_weights(model.get_weights())
    with fileio.atomic_path(out / file) as tmp:
        shipped.save_weights(tmp)
    manifest_path = out / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {"format": 1, "classifiers": {}}
    manifest["classifiers"][args.dataset] = {
        "dataset": args.dataset,
        "data_shape": list(x.shape[1:]),
        "class_names": class_names,
        "feature_units": 128,
        "file": file,
        "sha256": pretrained.sha256(out / file),
        "bytes": (out / file).stat().st_size,
        **results,
        "train": {"examples": len(x), "epochs": args.epochs, "batch_size": args.batch_size,
                  "learning_rate": args.learning_rate, "seed": args.seed, "seconds": round(seconds, 1),
                  "final_loss": round(float(history.history["loss"][-1]), 5),
                  "binarize_half": args.dataset == "mnist"},
        "command": "python benchmarks/train_classifier.py " + " ".join(
            shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]) if a != args.data_dir
            and not a.startswith("--data-dir")),
    }
    fileio.atomic_write_text(manifest_path, json.dumps(manifest, indent=1) + "\n")
    print(f"wrote {out / file} and {manifest_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
