"""A plain re-statement of Jang et al.'s Gumbel-softmax VAE notebook, to cross-check ``categorical_vae``.

``ericjang/gumbel-softmax`` (``gumbel_softmax_vae_v2.ipynb``) trains 784-512-256 -> 20 x 10 relaxed one-hot ->
256-512-784 with a Bernoulli likelihood on dynamically binarized MNIST, batch 100, Adam 3e-4, tau fixed at 1.0,
and either a Monte-Carlo KL of the relaxed posterior against the relaxed uniform prior (``--kl relaxed``) or
the closed-form KL of the categorical posterior against the uniform categorical prior (``--kl categorical``).
This script builds that graph from Keras layers and TFP distributions only (no vaezoo model), so its training
loss can be set beside ``categorical_vae``'s ``history.csv`` at the same step: if the two agree, a gap to a
published figure is the setting's, not vaezoo's.

It prints the mean training loss (-ELBO of the relaxed samples, nats) over each window of ``--every`` steps and
writes them as JSON with ``--out``.

    python benchmarks/gumbel_reference.py --kl relaxed --steps 10000
    python benchmarks/gumbel_reference.py --kl categorical --steps 10000
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_probability as tfp  # noqa: E402

from vaezoo import data  # noqa: E402

tfd = tfp.distributions
VARIABLES, CLASSES = 20, 10


def mlp(inputs: int, units, outputs: int) -> keras.Sequential:
    return keras.Sequential([keras.Input((inputs,)), *[keras.layers.Dense(u, "relu") for u in units],
                             keras.layers.Dense(outputs)])


def train(kl: str, steps: int, every: int, tau: float, learning_rate: float, seed: int, data_dir=None):
    """Yield (step, mean loss, mean KL) over each window of ``every`` steps."""
    keras.utils.set_random_seed(seed)
    images = data.mnist_arrays("train", data_dir)[0].reshape(-1, 784).astype("float32")
    encoder = mlp(784, (512, 256), VARIABLES * CLASSES)
    decoder = mlp(VARIABLES * CLASSES, (256, 512), 784)
    optimizer = keras.optimizers.Adam(learning_rate)
    variables = encoder.trainable_variables + decoder.trainable_variables

    @tf.function
    def step(batch):
        x = tf.cast(tf.random.uniform(tf.shape(batch)) < batch, tf.float32)  # dynamic binarization
        with tf.GradientTape() as tape:
            logits = tf.reshape(encoder(x), [-1, VARIABLES, CLASSES])
            q = tfd.RelaxedOneHotCategorical(tau, logits=logits)
            y = q.sample()
            log_px = tf.reduce_sum(tfd.Bernoulli(logits=decoder(tf.reshape(y, [-1, VARIABLES * CLASSES]))).log_prob(x), -1)
            if kl == "relaxed":
                prior = tfd.RelaxedOneHotCategorical(tau, logits=tf.zeros_like(logits))
                kl_term = tf.reduce_sum(q.log_prob(y) - prior.log_prob(y), -1)
            else:
                log_q = tf.nn.log_softmax(logits)
                kl_term = tf.reduce_sum(tf.exp(log_q) * (log_q + math.log(CLASSES)), [-2, -1])
            loss = -tf.reduce_mean(log_px - kl_term)
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss, tf.reduce_mean(kl_term)

    rng = np.random.default_rng(seed)
    window = []
    for i in range(1, steps + 1):
        window.append([float(v) for v in step(images[rng.integers(0, len(images), 100)])])
        if i % every == 0:
            loss, kl_mean = np.mean(window, 0)
            window = []
            yield i, float(loss), float(kl_mean)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kl", choices=("relaxed", "categorical"), default="relaxed")
    p.add_argument("--steps", type=int, default=10_000)
    p.add_argument("--every", type=int, default=500)
    p.add_argument("--tau", type=float, default=1.0, help="fixed temperature (the notebook's tau0)")
    p.add_argument("--learning-rate", type=float, default=3e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir")
    p.add_argument("--out", help="JSON file for the curve")
    args = p.parse_args(argv)
    start, curve = time.monotonic(), []
    for step, loss, kl_mean in train(args.kl, args.steps, args.every, args.tau, args.learning_rate, args.seed,
                                     args.data_dir):
        curve.append({"step": step, "loss": round(loss, 3), "kl": round(kl_mean, 3)})
        print(f"step {step:6d}  loss {loss:8.2f}  kl {kl_mean:6.2f}  {time.monotonic() - start:6.0f} s", flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps({**vars(args), "curve": curve}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
