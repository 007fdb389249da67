"""Where the MLP VAE's training step spends its time: the step built up one part at a time.

Stages 2-6 are each the one before plus one part of the training step of ``vaezoo.get("vae")`` (its network:
784-512-256-32, ReLU; batch 128); stages 7-10 are whole steps, each against the stage named. Stages 2-8 run
``STEPS`` (32) steps per call inside one XLA-compiled ``tf.function`` (a ``tf.range`` loop over the same batch, as
``fit`` with ``steps_per_execution=32`` does); stages 9-10 are whole ``model.fit`` epochs. Time per step is the median over rounds, every stage once per round
(rounds alternate, so the machine's drift hits every stage alike); the increments between consecutive stages are
what each part costs.

1. ``matmuls``: the step's matmuls alone (forward, input and weight gradients, in sequence:
   ``throughput.MatmulProbe``), no XLA loop (the probe of docs/results.md's GFLOP/s ratio).
2. ``network + SGD``: forward through the encoder (the mean half of its head) and decoder, a linear loss of the
   logits, the gradient, and a plain SGD update (something must consume the gradient, or XLA drops it).
3. ``+ sampling``: the reparameterised sample z = mu + sigma * eps (the head's log-variance half, the RNG).
4. ``+ likelihood and KL``: the Bernoulli log-likelihood on logits and the closed-form Gaussian KL (the ELBO).
5. ``Adam instead of SGD``: the minimal VAE step with Adam.
6. ``+ trackers``: and three ``keras.metrics.Mean`` trackers (loss, reconstruction, KL), as a Keras
   ``train_step`` keeps them.
7. ``plain twin train_step``: ``benchmarks/plain_vae.py``'s ``train_step`` (its K-sample code path at K = 1:
   tiling, reshapes), against stage 6.
8. ``vaezoo train_step``: ``vae``'s own ``train_step`` (TFP distributions, input checks, the KL-weight variable,
   its metric trackers) in the same loop, against stage 6.
9. ``plain twin, fit``: the plain twin through ``model.fit`` (XLA, 32 steps per execution), against stage 7: Keras'
   trainer (data adapter, iterator, callbacks, the host sync per execution).
10. ``vaezoo, fit``: ``vae`` through ``model.fit`` with its defaults, against stage 8: the same, with vaezoo's
    callback list (true step counts; the first-batch check runs before the timed epoch).

    python benchmarks/step_profile.py --rounds 7 --out docs/step_profile.json
    python benchmarks/step_profile.py --report docs/step_profile.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import vaezoo  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import add_output_args, emit, print_report  # noqa: E402
from plain_vae import PlainVAE  # noqa: E402
from throughput import BATCH, EpochTimer, MatmulProbe, vae_train_flops_per_example  # noqa: E402

STEPS = 32
STAGES = ("matmuls", "network + SGD", "+ sampling", "+ likelihood and KL", "Adam instead of SGD", "+ trackers",
          "plain twin train_step", "vaezoo train_step", "plain twin, fit", "vaezoo, fit")
#: The stage each whole-step stage is compared with (the others: the stage before).
AGAINST = {"plain twin train_step": "+ trackers", "vaezoo train_step": "+ trackers",
           "plain twin, fit": "plain twin train_step", "vaezoo, fit": "vaezoo train_step"}


def looped(step, calls_per_measurement):
    """``step`` run ``STEPS`` times per XLA-compiled call; returns a timer of ``calls_per_measurement`` calls."""
    @tf.function(jit_compile=True)
    def run():
        for _ in tf.range(STEPS):
            step()
        return tf.constant(0.0)

    def measure():
        run()  # the first call traces and compiles
        start = time.perf_counter()
        for _ in range(calls_per_measurement):
            run().numpy()
        return (time.perf_counter() - start) / (calls_per_measurement * STEPS)

    return run, measure


class Stage:
    def __init__(self, name, seconds_per_step):
        self.name, self.measure_once = name, seconds_per_step
        self.times: list[float] = []

    def measure(self):
        self.times.append(self.measure_once())

    @property
    def time(self):
        return statistics.median(self.times)


def plain_stages(x, calls):
    """Stages 2-7 on one plain twin's layers (its own weights per stage: the updates differ)."""
    stages = []

    def make(kind):
        keras.utils.set_random_seed(0)
        model = PlainVAE(seed=0)
        enc, dec = model.encoder, model.decoder
        variables = model.trainable_variables
        optimizer = keras.optimizers.Adam(1e-3) if kind >= 5 else keras.optimizers.SGD(1e-3)
        optimizer.build(variables)
        seed = keras.random.SeedGenerator(0)
        trackers = [keras.metrics.Mean(name=n) for n in ("loss", "reconstruction", "kl")]
        if kind == 7:
            model.compile(optimizer)
            return lambda: model.train_step(x)

        def step():
            with tf.GradientTape() as tape:
                mean, log_var = tf.split(enc(x), 2, axis=-1)
                if kind == 2:
                    z = mean
                else:
                    z = mean + tf.exp(0.5 * log_var) * keras.random.normal(tf.shape(mean), seed=seed)
                logits = dec(z)
                if kind <= 3:
                    loss = tf.reduce_mean(logits)
                else:
                    rec = tf.reduce_sum(tf.nn.sigmoid_cross_entropy_with_logits(labels=x, logits=logits), [1, 2, 3])
                    kl = -0.5 * tf.reduce_sum(1.0 + log_var - tf.square(mean) - tf.exp(log_var), axis=-1)
                    loss = tf.reduce_mean(rec + kl)
            optimizer.apply(tape.gradient(loss, variables), variables)
            if kind == 6:
                for tracker, value in zip(trackers, (loss, tf.reduce_mean(rec), tf.reduce_mean(kl))):
                    tracker.update_state(value)

        return step

    for kind, name in zip(range(2, 8), STAGES[1:7]):
        stages.append(Stage(name, looped(make(kind), calls)[1]))
    return stages


def vaezoo_stage(x, calls):
    keras.utils.set_random_seed(0)
    model = vaezoo.get("vae", seed=0)
    model.compile(keras.optimizers.Adam(1e-3))
    model.optimizer.build(model.trainable_variables)
    return Stage("vaezoo train_step", looped(lambda: model.train_step(x), calls)[1])


def fit_stage(name, model, x, steps):
    dataset = tf.data.Dataset.from_tensors(x).repeat()

    def measure():
        timer = EpochTimer()
        model.fit(dataset, epochs=1, steps_per_epoch=steps, verbose=0, callbacks=[timer])
        return timer.seconds / steps

    model.fit(dataset, epochs=1, steps_per_epoch=STEPS, verbose=0)  # trace and compile
    return Stage(name, measure)


def profile(rounds: int, calls: int) -> dict:
    x = tf.constant((np.random.default_rng(0).random((BATCH, 28, 28, 1)) < 0.13).astype("float32"))
    probe = MatmulProbe(in_sequence=True)
    probe.warm_up(0.5)
    stages = [Stage(STAGES[0], lambda: probe._time(probe.calls) / probe.calls)]  # one call: one step's matmuls
    stages += plain_stages(x, calls)
    stages.append(vaezoo_stage(x, calls))
    keras.utils.set_random_seed(0)
    plain = PlainVAE(seed=0)
    plain.compile(keras.optimizers.Adam(1e-3), jit_compile=True, steps_per_execution=STEPS)
    zoo = vaezoo.get("vae", seed=0)
    zoo.compile(keras.optimizers.Adam(1e-3))
    stages.append(fit_stage("plain twin, fit", plain, x, calls * STEPS))
    stages.append(fit_stage("vaezoo, fit", zoo, x, calls * STEPS))
    for stage in stages:  # warm-up: trace, compile, one timed call
        stage.measure_once()
    for _ in range(rounds):
        for stage in stages:
            stage.measure()
    flops = BATCH * vae_train_flops_per_example()
    ms = {stage.name: stage.time * 1e3 for stage in stages}
    rows = []
    for n, stage in enumerate(stages):
        against = AGAINST.get(stage.name, STAGES[n - 1] if n else None)
        rows.append({"stage": stage.name, "ms_per_step": round(ms[stage.name], 4),
                     "rounds_ms": [round(t * 1e3, 4) for t in stage.times], "against": against,
                     "increment_ms": None if against is None else round(ms[stage.name] - ms[against], 4),
                     "examples_per_s": round(BATCH / stage.time), "matmul_gflops": round(flops / stage.time / 1e9, 1)})
    return {"batch": BATCH, "steps_per_call": STEPS, "rounds": rounds, "calls_per_measurement": calls,
            "matmul_mflop_per_step": flops / 1e6, "rows": rows, "tensorflow": tf.__version__,
            "keras": keras.__version__, "cpus": os.cpu_count()}


def render_markdown(result: dict) -> str:
    lines = ["| stage | ms per step (median) | increment (ms) | against | examples/s | matmul GFLOP/s |",
             "| --- | ---: | ---: | --- | ---: | ---: |"]
    for r in result["rows"]:
        inc = "" if r["increment_ms"] is None else f"{r['increment_ms']:+.3f}"
        lines.append(f"| {r['stage']} | {r['ms_per_step']:.3f} | {inc} | {r['against'] or ''} | "
                     f"{r['examples_per_s']} | {r['matmul_gflops']} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--calls", type=int, default=10, help="XLA calls of 32 steps per measurement")
    add_output_args(parser)
    args = parser.parse_args(argv)
    if args.report:
        return print_report(args.report, render_markdown)
    return emit(profile(args.rounds, args.calls), render_markdown, args.out)


if __name__ == "__main__":
    sys.exit(main())
