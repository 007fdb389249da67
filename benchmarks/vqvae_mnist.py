"""VQ-VAE on MNIST: test reconstruction error, code perplexity and codes used after a budgeted run.

Trains the registry's `vq_vae` (7x7 codes, 64-entry EMA codebook, dead-code restarts) on
dynamically binarized MNIST and evaluates on the test set (one seeded binarization):
reconstruction -log p(x|z_q) in nats, the mean squared error of the reconstruction mean against the
grey-level test images, the perplexity of code usage over the whole test set and the fraction of
the codebook it uses. Then trains the gated PixelCNN prior (`pixelcnn_prior`) on the training set's
codes and reports its test negative log-likelihood over codes (nats per code map, bits per code).

    python benchmarks/vqvae_mnist.py --epochs 3 --prior-epochs 3 --data-dir ../shared/data
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import vaezoo  # noqa: E402
from vaezoo import data  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--data-dir", default=os.environ.get(data.DATA_DIR_ENV, "../shared/data"))
    parser.add_argument("--prior-epochs", type=int, default=3, help="0 skips the prior")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides")
    args = parser.parse_args()
    overrides = dict(vaezoo.config.parse_assignment(a) for a in args.set)
    cfg = vaezoo.get_config("vq_vae", **overrides)
    keras.utils.set_random_seed(args.seed)
    model = vaezoo.get("vq_vae", **overrides, seed=args.seed)
    train = data.load("mnist", "train", batch_size=cfg["batch_size"], data_dir=args.data_dir, binarize="dynamic",
                      seed=args.seed)
    test_binary = data.load("mnist", "test", batch_size=500, data_dir=args.data_dir, binarize="dynamic", seed=1)
    grey, _ = data.mnist_arrays("test", args.data_dir)
    model.compile(keras.optimizers.Adam(cfg["learning_rate"]), jit_compile=True)
    start = time.perf_counter()
    model.fit(train, epochs=args.epochs, verbose=0, shuffle=False)
    seconds = time.perf_counter() - start
    result = model.evaluate(test_binary, return_dict=True, verbose=0)
    codes = np.concatenate([model.encode(grey[i : i + 500]).numpy().ravel() for i in range(0, len(grey), 500)])
    counts = np.bincount(codes, minlength=model.num_codes)
    p = counts[counts > 0] / counts.sum()
    recon = np.concatenate([model.reconstruct(grey[i : i + 500]).numpy() for i in range(0, len(grey), 500)])
    summary = {
        "epochs": args.epochs,
        "s_per_epoch": round(seconds / args.epochs, 1),
        "test_reconstruction_nats": round(result["reconstruction"], 2),
        "test_mse_per_pixel": round(float(np.mean((recon - grey) ** 2)), 5),
        "test_perplexity": round(float(np.exp(-(p * np.log(p)).sum())), 1),
        "test_codes_used": f"{int((counts > 0).sum())}/{model.num_codes}",
        "batch_perplexity_mean": round(result["perplexity"], 1),
    }
    if args.prior_epochs:
        keras.utils.set_random_seed(args.seed)
        prior = vaezoo.get("pixelcnn_prior", code_shape=list(model.code_shape), num_codes=model.num_codes,
                           seed=args.seed)
        prior_cfg = vaezoo.get_config("pixelcnn_prior")
        prior.compile(keras.optimizers.Adam(prior_cfg["learning_rate"]), jit_compile=True)
        start = time.perf_counter()
        prior.fit(data.codes_dataset(model, train), epochs=args.prior_epochs, verbose=0, shuffle=False)
        prior_seconds = time.perf_counter() - start
        nll = prior.evaluate(data.codes_dataset(model, test_binary), return_dict=True, verbose=0)
        summary.update(
            prior_epochs=args.prior_epochs,
            prior_s_per_epoch=round(prior_seconds / args.prior_epochs, 1),
            prior_test_nll_nats=round(nll["nll"], 2),
            prior_test_bits_per_code=round(nll["bits_per_dim"], 3),
            uniform_prior_nats=round(float(np.prod(model.code_shape) * np.log(model.num_codes)), 2),
        )
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
