"""What the decoder's output-bias init does in the first steps: tanh saturation with and without it.

Builds a model of the inference table (default: ``vae_2layer``, Burda et al.'s two-layer networks, with the ladder
rows' KL warm-up of 18,000 steps), trains it on dynamically binarized MNIST at batch 100 with the harness's Adam
(1e-3, epsilon 1e-4), once as it comes and once after ``vaezoo.training.init_output_bias`` (the log-odds of the
training mean image, as Burda et al.'s code does), and reports after each block of steps, on one fixed batch:

* ``saturated``: the fraction of the decoder's first hidden layer's tanh units beyond |0.99| at the posterior
  samples of z_1;
* ``output_spread``: the decoder output's standard deviation over the batch, averaged over pixels (0: the same
  image for every input);
* ``reconstruction`` and ``kl``: the training metrics of the block.

    python benchmarks/output_bias.py                       # vae_2layer, 10 blocks of 20 steps, then to 600
    python benchmarks/output_bias.py --model vae --steps 20 20 20

Reference: Burda, Grosse & Salakhutdinov, "Importance Weighted Autoencoders", ICLR 2016 (``get_train_bias_np``
in their code).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import vaezoo  # noqa: E402
from vaezoo import data, training  # noqa: E402


def first_hidden(model, x):
    """The decoder's first hidden activations at posterior samples of the bottom layer's z."""
    if hasattr(model, "latent_dims"):
        noise = model.posterior_noise(1, tf.shape(x)[0], tf.constant([1, 2]))
        z = model._infer(x, noise)[0][0][0]
    else:
        params = model.posterior_parameters(x)
        z = model.posterior_sample(params, 1, tf.shape(x)[0], seed=tf.constant([1, 2]))[0][0]
    dense = [l for l in model.decoder.layers if isinstance(l, keras.layers.Dense)][0]
    return dense(z), z


def measure(model, x) -> dict:
    hidden, z = first_hidden(model, x)
    output = model.decode(z) if not hasattr(model, "latent_dims") else model.likelihood_distribution(z).mean()
    return {"saturated": round(float(tf.reduce_mean(tf.cast(tf.abs(hidden) > 0.99, tf.float32))), 4),
            "output_spread": round(float(tf.reduce_mean(tf.math.reduce_std(output, axis=0))), 5)}


def run(args, init: bool) -> list[dict]:
    keras.utils.set_random_seed(args.seed)
    train = data.load("mnist", "train", batch_size=100, data_dir=args.data_dir, binarize="dynamic", seed=args.seed)
    settings = {"warmup_steps": args.warmup} if args.model != "vae" else {}
    if args.model == "vae":
        settings = dict(hidden_units=[200, 200], latent_dim=50, activation="tanh")
    model = vaezoo.get(args.model, seed=args.seed, **settings)
    if init:
        training.init_output_bias(model, train)
    callbacks = [] if args.model != "vae" or not args.warmup else [vaezoo.callbacks.KLWarmup(args.warmup)]
    model.compile(keras.optimizers.Adam(1e-3, epsilon=1e-4), jit_compile=False, steps_per_execution=1)
    batch = next(iter(train))
    rows = [{"steps": 0, **measure(model, batch)}]
    done = 0
    for steps in args.steps:
        logs = model.fit(train.take(steps), epochs=1, verbose=0, callbacks=callbacks).history
        done += steps
        rows.append({"steps": done, **measure(model, batch), "reconstruction": round(logs["reconstruction"][-1], 2),
                     "kl": round(logs["kl"][-1], 2)})
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="vae_2layer", choices=["vae_2layer", "iwae_2layer", "vae"])
    p.add_argument("--steps", type=int, nargs="+", default=[20] * 10 + [400], help="steps per block")
    p.add_argument("--warmup", type=int, default=18000, help="KL warm-up steps (0: none)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", default=os.environ.get(data.DATA_DIR_ENV, "../shared/data"))
    args = p.parse_args(argv)
    result = {"model": args.model, "warmup_steps": args.warmup,
              "without_init": run(args, init=False), "with_init": run(args, init=True)}
    for key in ("without_init", "with_init"):
        print(key)
        for row in result[key]:
            print("  ", row)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
