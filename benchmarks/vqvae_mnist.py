"""VQ-VAE (or VQ-VAE-2) on MNIST: test reconstruction error, code perplexity and codes used, prior NLL.

Trains the registry's `vq_vae` (7x7 codes, 64-entry EMA codebook, dead-code restarts) or, with
`--model vq_vae2`, VQ-VAE-2 (top 7x7 and bottom 14x14 codes) on dynamically binarized MNIST and
evaluates on the test set (one seeded binarization): reconstruction -log p(x|z_q) in nats, the mean
squared error of the reconstruction mean against the grey-level test images, and per code level the
perplexity of code usage over the whole test set and the fraction of the codebook it uses. Then
trains the model's prior over codes (`pixelcnn_prior`, or `hierarchical_pixelcnn_prior` for VQ-VAE-2)
on the training set's codes, reports its test negative log-likelihood over codes (nats per image,
bits per code) and, with `--samples PNG`, writes a grid of images decoded from codes it draws.

    python benchmarks/vqvae_mnist.py --epochs 3 --prior-epochs 3 --data-dir ../shared/data
    python benchmarks/vqvae_mnist.py --model vq_vae2 --epochs 3 --prior-epochs 3 --samples vq_vae2.png

With ``--checkpoint`` (and ``--prior-checkpoint``) it evaluates trained models instead of training;
with ``--pretrained``, the shipped weights and their shipped prior (``vaezoo.get(NAME, pretrained=True)``):

    python benchmarks/vqvae_mnist.py --model vq_vae2 --checkpoint runs/vq_vae2/model.keras \
        --prior-checkpoint runs/prior/model.keras --samples vq_vae2.png
    python benchmarks/vqvae_mnist.py --model vq_vae2 --pretrained --samples docs/vq_vae2_samples.png

With a prior, ``bound_nats`` = reconstruction + the prior's NLL of the codes, an upper bound on the test
NLL of the binary images (the posterior is one code map, so the KL term is -log p(codes)).
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
from vaezoo import data, images  # noqa: E402


def _usage(codes: np.ndarray, num_codes: int) -> dict:
    counts = np.bincount(codes.ravel(), minlength=num_codes)
    p = counts[counts > 0] / counts.sum()
    return {"perplexity": round(float(np.exp(-(p * np.log(p)).sum())), 1),
            "codes_used": f"{int((counts > 0).sum())}/{num_codes}"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="vq_vae", choices=("vq_vae", "vq_vae2"))
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--data-dir", default=os.environ.get(data.DATA_DIR_ENV, "../shared/data"))
    parser.add_argument("--prior-epochs", type=int, default=3, help="0 skips the prior")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides")
    parser.add_argument("--checkpoint", help="evaluate this trained model (.keras) instead of training one")
    parser.add_argument("--prior-checkpoint", help="with --checkpoint: evaluate this trained prior")
    parser.add_argument("--pretrained", action="store_true", help="evaluate the shipped weights and their prior")
    parser.add_argument("--limit", type=int, help="train on a fixed random subset of N training images (smoke runs)")
    parser.add_argument("--samples", metavar="PNG", help="write 64 images decoded from the prior's codes here")
    args = parser.parse_args()
    overrides = dict(vaezoo.config.parse_assignment(a) for a in args.set)
    cfg = vaezoo.get_config(args.model, **overrides)
    keras.utils.set_random_seed(args.seed)
    model = vaezoo.get(args.model, **overrides, seed=args.seed)
    train = data.load("mnist", "train", batch_size=cfg["batch_size"], data_dir=args.data_dir, binarize="dynamic",
                      seed=args.seed, limit=args.limit)
    test_binary = data.load("mnist", "test", batch_size=500, data_dir=args.data_dir, binarize="dynamic", seed=1)
    grey, _ = data.mnist_arrays("test", args.data_dir)
    if args.pretrained:
        entry = vaezoo.pretrained_info(args.model)
        model = vaezoo.get(entry.key, pretrained=True)
        model.compile()
        args.epochs, seconds = f"{entry.key} ({entry.epochs} epochs)", None
    elif args.checkpoint:
        model = keras.models.load_model(args.checkpoint)
        model.compile()
        args.epochs, seconds = None, None
    else:
        model.compile(keras.optimizers.Adam(cfg["learning_rate"]), jit_compile=True)
        start = time.perf_counter()
        model.fit(train, epochs=args.epochs, verbose=0, shuffle=False)
        seconds = time.perf_counter() - start
    result = model.evaluate(test_binary, return_dict=True, verbose=0)
    levels = getattr(model, "code_levels", None) or ("codes",)
    encoded = [model.encode(grey[i : i + 500]) for i in range(0, len(grey), 500)]
    encoded = [e if isinstance(e, tuple) else (e,) for e in encoded]
    recon = np.concatenate([model.reconstruct(grey[i : i + 500]).numpy() for i in range(0, len(grey), 500)])
    summary = {
        "model": args.model,
        "epochs": args.epochs or args.checkpoint,
        "s_per_epoch": round(seconds / args.epochs, 1) if seconds else None,
        "test_reconstruction_nats": round(result["reconstruction"], 2),
        "test_mse_per_pixel": round(float(np.mean((recon - grey) ** 2)), 5),
    }
    for k, level in enumerate(levels):
        usage = _usage(np.concatenate([e[k].numpy().ravel() for e in encoded]), model.num_codes)
        summary.update({f"test_{name}" + ("" if level == "codes" else f"_{level}"): v for name, v in usage.items()})
    if args.pretrained and entry.prior:
        prior = vaezoo.get(entry.prior, pretrained=True)
        prior.compile()
        args.prior_epochs, prior_seconds = f"{entry.prior} ({vaezoo.pretrained_info(entry.prior).epochs} epochs)", None
    elif args.prior_checkpoint:
        prior = keras.models.load_model(args.prior_checkpoint)
        prior.compile()
        args.prior_epochs, prior_seconds = args.prior_checkpoint, None
    elif args.prior_epochs:
        keras.utils.set_random_seed(args.seed)
        prior = vaezoo.get(model.prior_name, **model.prior_config(), seed=args.seed)
        prior_cfg = vaezoo.get_config(model.prior_name)
        prior.compile(keras.optimizers.Adam(prior_cfg["learning_rate"]), jit_compile=True)
        start = time.perf_counter()
        prior.fit(data.codes_dataset(model, train), epochs=args.prior_epochs, verbose=0, shuffle=False)
        prior_seconds = time.perf_counter() - start
    if args.prior_epochs:
        nll = prior.evaluate(data.codes_dataset(model, test_binary), return_dict=True, verbose=0)
        num_codes_per_image = sum(np.prod(e.shape[1:]) for e in encoded[0])
        summary.update(
            prior=model.prior_name,
            prior_epochs=args.prior_epochs,
            prior_s_per_epoch=round(prior_seconds / args.prior_epochs, 1) if prior_seconds else None,
            prior_test_nll_nats=round(nll["nll"], 2),
            prior_test_bits_per_code=round(nll["bits_per_dim"], 3),
            **{f"prior_test_nll_{level}_nats": round(nll[f"nll_{level}"], 2) for level in levels if f"nll_{level}" in nll},
            uniform_prior_nats=round(float(num_codes_per_image * np.log(model.num_codes)), 2),
            bound_nats=round(result["reconstruction"] + nll["nll"], 2),
        )
        if args.samples:
            drawn = model.sample(64, seed=args.seed, prior=prior)
            summary["samples"] = images.save_grid(np.asarray(drawn), args.samples)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
