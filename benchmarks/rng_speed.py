"""What the reparameterised sample's noise costs per training step, by the way it is drawn.

``benchmarks/step_profile.py`` found the step's sampling stage (eps ~ N(0, I) of ``[128, 32]`` and z = mu +
sigma * eps) at about 1 ms of the MLP VAE's 6.4 ms. This benchmark times the noise alone: ``STEPS`` (32) draws of
one step's standard normals (:data:`SHAPES`) per call, 32 steps per call as ``fit`` runs them with
``steps_per_execution=32``, in three layouts (:data:`MODES`: one XLA computation with the loop inside, as vaezoo's
fused path runs its MLP families; a ``tf.while_loop`` calling an XLA-compiled step, as Keras' own loop does; no XLA),
each draw summed into the loop's carry so that nothing is dropped (times in microseconds per step):

* ``no noise``: the loop with a constant in place of the draw (the loop's own cost, subtracted from the rest);
* ``stateless_normal (vaezoo)``: ``tf.random.stateless_normal`` with a seed folded per step, the default algorithm
  (what ``vaezoo.layers.Posterior.draw_noise`` does);
* ``stateless_normal philox`` / ``threefry``: the same with the counter-based generator named;
* ``keras.random.normal``: a ``keras.random.SeedGenerator`` (the plain twins' draw);
* ``Box-Muller``: two ``stateless_uniform`` halves turned into normals by hand (another transform of the same
  Philox bits);
* ``one draw per call``: all 32 steps' noise drawn once before the loop and sliced per step (noise drawn outside the
  training loop).

Each variant's time per step is the median over rounds (every variant once per round). Then whole training steps
(:func:`fit_rows`): ``vae`` and ``iwae`` (K = 5) through ``model.fit`` with XLA and the default noise, with XLA and
ThreeFry noise (:func:`threefry_noise`, patched in for the experiment), and without XLA.

    python benchmarks/rng_speed.py --rounds 5 --seconds 0.5 --fit-steps 64 --out docs/rng_speed.json
    python benchmarks/rng_speed.py --report docs/rng_speed.json
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import add_output_args, emit, print_report  # noqa: E402

BATCH, LATENT, STEPS = 128, 32, 32


def _normal_box_muller(shape, seed):
    u = tf.random.stateless_uniform(tf.concat([[2], shape], 0), seed, minval=np.finfo(np.float32).tiny, maxval=1.0)
    return tf.sqrt(-2.0 * tf.math.log(u[0])) * tf.cos(2.0 * np.pi * u[1])


def _normal_alg(shape, seed, alg: int):
    """``StatelessRandomNormalV2`` with the algorithm named (1 Philox, 2 ThreeFry) on the key and counter that
    ``StatelessRandomGetKeyCounter`` scrambles from the seed (seeds folded per step differ in one word; used
    as a raw counter they would start overlapping streams)."""
    key, counter = tf.raw_ops.StatelessRandomGetKeyCounter(seed=seed)
    return tf.raw_ops.StatelessRandomNormalV2(shape=shape, key=key, counter=counter, alg=alg)


def _draws(shape):
    """name -> draw(step_seed) for one step's noise (``step_seed`` int32[2], different every step)."""
    import keras

    generator = keras.random.SeedGenerator(0)
    return {
        "stateless_normal (vaezoo)": lambda s: tf.random.stateless_normal(shape, s),
        "stateless_normal philox": lambda s: _normal_alg(shape, s, 1),
        "stateless_normal threefry": lambda s: _normal_alg(shape, s, 2),
        "keras.random.normal": lambda s: keras.random.normal(shape, seed=generator),
        "Box-Muller": lambda s: _normal_box_muller(shape, s),
    }


VARIANTS = ("no noise", "stateless_normal (vaezoo)", "stateless_normal philox", "stateless_normal threefry",
            "keras.random.normal", "Box-Muller", "one draw per call")


#: How the 32 steps run: one XLA computation with the loop inside (vaezoo's fused path, ``vaezoo/fused.py``),
#: a loop calling an XLA-compiled step (Keras' ``steps_per_execution`` loop), or no XLA.
MODES = ("xla_fused", "xla_per_step", "no_xla")


def make_call(variant: str, mode: str, steps: int = STEPS, shape=(BATCH, LATENT)):
    """A function running ``steps`` draws of ``variant`` laid out as ``mode`` (:data:`MODES`); it returns their
    sum."""
    shape = list(shape)
    draw = _draws(shape).get(variant)

    def step(i, acc, seed, pool):
        if variant == "no noise":
            eps = tf.fill(shape, tf.cast(i, tf.float32))
        elif variant == "one draw per call":
            eps = pool[i]
        else:
            eps = draw(tf.random.experimental.stateless_fold_in(seed, i))
        return i + 1, acc + eps

    def loop(seed, step):
        pool = (tf.random.stateless_normal([steps, *shape], seed) if variant == "one draw per call"
                else tf.zeros([1]))
        return tf.while_loop(lambda i, _: i < steps, lambda i, acc: step(i, acc, seed, pool),
                             (tf.constant(0), tf.zeros(shape)))[1]

    if mode == "xla_fused":
        return tf.function(lambda seed: loop(seed, step), jit_compile=True)
    if mode == "xla_per_step":
        compiled = tf.function(step, jit_compile=True, reduce_retracing=True)
        return tf.function(lambda seed: loop(seed, compiled))
    return tf.function(lambda seed: loop(seed, step), jit_compile=False)


#: The noise of one training step: the MLP VAE's (batch 128, 32 latents) and IWAE K = 50's (K x batch 100 x 50).
SHAPES = ((BATCH, LATENT), (50, 100, 50))


def measure(rounds: int = 5, calls: int = 50, variants=VARIANTS, shapes=SHAPES, seconds: float = 0.5) -> dict:
    """Microseconds per step (median over rounds) of each variant and noise shape, with XLA and without."""
    shapes = [tuple(int(d) for d in shape) for shape in shapes]
    fns = {(v, mode, shape): make_call(v, mode, shape=shape) for shape in shapes for v in variants
           for mode in MODES}
    seed = tf.constant([1, 2], tf.int32)
    errors = {}
    for key, fn in list(fns.items()):  # compile and warm up; an algorithm a mode lacks is recorded, not fatal
        try:
            fn(seed).numpy()
        except (tf.errors.OpError, ValueError) as exc:
            errors[key] = str(exc).strip().splitlines()[0][:200]
            del fns[key]
    counts = {}
    for key, fn in fns.items():  # calls per measurement: about ``seconds`` each, at most ``calls``
        begin = time.perf_counter()
        fn(seed).numpy()
        counts[key] = max(1, min(calls, round(seconds / (time.perf_counter() - begin))))
    times = {key: [] for key in fns}
    for r in range(rounds):
        for key, fn in fns.items():
            begin = time.perf_counter()
            for c in range(counts[key]):
                out = fn(tf.constant([r, c], tf.int32))
            out.numpy()
            times[key].append((time.perf_counter() - begin) / (counts[key] * STEPS) * 1e6)
    rows = []
    for shape in shapes:
        for v in variants:
            row = {"shape": list(shape), "normals": int(np.prod(shape)), "variant": v}
            for prefix in MODES:
                t = times.get((v, prefix, shape))
                row[f"{prefix}_us_per_step"] = None if t is None else round(statistics.median(t), 2)
                row[f"{prefix}_rounds_us"] = None if t is None else [round(x, 2) for x in t]
                if (v, prefix, shape) in errors:
                    row[f"{prefix}_error"] = errors[(v, prefix, shape)]
            rows.append(row)
    for row in rows:  # the noise's own cost: minus the loop without noise (of the same shape)
        base = next((b for b in rows if b["shape"] == row["shape"] and b["variant"] == "no noise"), None)
        for prefix in MODES:
            col = f"{prefix}_us_per_step"
            known = base is not None and row[col] is not None and base[col] is not None
            row[f"{prefix}_noise_us"] = round(row[col] - base[col], 2) if known else None
    return {"shapes": [list(x) for x in shapes], "steps_per_call": STEPS, "max_calls": calls, "seconds": seconds,
            "calls": {f"{v} {mode} {'x'.join(map(str, shape))}": n for (v, mode, shape), n in counts.items()},
            "rounds": rounds,
            "rows": rows, "tensorflow": tf.__version__, "cpus": os.cpu_count()}


#: Whole training steps through ``model.fit`` (vaezoo's compile defaults but for XLA): the family, XLA or not,
#: and the noise's algorithm under XLA (ThreeFry by :func:`threefry_noise`, an experiment, not vaezoo's code).
FIT_CONFIGS = (("vae", True, "philox"), ("vae", True, "threefry"), ("vae", False, "philox"),
               ("iwae", True, "philox"), ("iwae", True, "threefry"), ("iwae", False, "philox"))


@contextlib.contextmanager
def threefry_noise():
    """While tracing inside this block, posterior noise is drawn by ThreeFry (``StatelessRandomNormalV2``, alg
    2, on the key and counter scrambled from the same seed) instead of the default Philox: what a change of
    ``vaezoo.layers.Posterior.draw_noise`` would do. Functions traced here keep it."""
    from vaezoo import layers

    original = layers.Posterior.draw_noise

    def draw_noise(self, num_samples, batch_size, seed):
        return _normal_alg(tf.stack([num_samples, batch_size, *self.noise_shape()]), seed, 2)

    layers.Posterior.draw_noise = draw_noise
    try:
        yield
    finally:
        layers.Posterior.draw_noise = original


def fit_rows(rounds: int = 5, steps: int = 64, configs=FIT_CONFIGS) -> list[dict]:
    """Milliseconds per training step (``fit`` epochs of ``steps`` batches of 128, median over rounds) of each
    configuration, every configuration once per round."""
    import keras

    import vaezoo

    batch = (np.random.default_rng(0).random((BATCH, 28, 28, 1)) < 0.13).astype("float32")
    data = tf.data.Dataset.from_tensors(batch).repeat(steps)
    models = []
    for name, jit, alg in configs:
        keras.utils.set_random_seed(0)
        model = vaezoo.get(name, seed=0)
        model.compile(keras.optimizers.Adam(1e-3), jit_compile=jit)
        with threefry_noise() if alg == "threefry" else contextlib.nullcontext():
            model.fit(data, epochs=1, verbose=0)  # traced (and compiled) here
        models.append(model)
    times = [[] for _ in configs]
    for _ in range(rounds):
        for model, t in zip(models, times):
            begin = time.perf_counter()
            model.fit(data, epochs=1, verbose=0)
            t.append((time.perf_counter() - begin) / steps * 1e3)
    return [{"model": name, "xla": jit, "noise": alg, "ms_per_step": round(statistics.median(t), 3),
             "rounds_ms": [round(x, 3) for x in t]} for (name, jit, alg), t in zip(configs, times)]


def render_markdown(result: dict) -> str:
    lines = ["| noise per step | draw | XLA, one loop (vaezoo fused) | noise alone | XLA per step (Keras loop) | "
             "noise alone | no XLA | noise alone |", "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in result["rows"]:
        def fmt(v, prefix):
            if f"{prefix}_error" in r:
                return "unsupported"
            return "" if v is None else f"{v:.1f}"
        cells = [f"{fmt(r[f'{m}_us_per_step'], m)} | {fmt(r[f'{m}_noise_us'], m)}" for m in MODES]
        lines.append(f"| {'x'.join(map(str, r['shape']))} | {r['variant']} | " + " | ".join(cells) + " |")
    if result.get("fit"):
        lines += ["", f"| model (fit, batch {BATCH}) | XLA | noise algorithm | ms per step (median) | rounds |",
                  "| --- | --- | --- | ---: | --- |"]
        for r in result["fit"]:
            lines.append(f"| {r['model']} | {'yes' if r['xla'] else 'no'} | {r['noise']} | {r['ms_per_step']:.2f} | "
                         + ", ".join(f"{x:.2f}" for x in r["rounds_ms"]) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=50, help="calls of 32 steps per measurement, at most")
    parser.add_argument("--seconds", type=float, default=0.5, help="target seconds per measurement")
    parser.add_argument("--shapes", nargs="+", default=["x".join(map(str, x)) for x in SHAPES],
                        help="noise shapes per step, e.g. 128x32")
    parser.add_argument("--fit-steps", type=int, default=64,
                        help="training steps per fit measurement of FIT_CONFIGS (0: skip the fit rows)")
    add_output_args(parser)
    args = parser.parse_args(argv)
    if args.report:
        return print_report(args.report, render_markdown)
    shapes = [tuple(int(d) for d in x.split("x")) for x in args.shapes]
    result = measure(args.rounds, args.calls, shapes=shapes, seconds=args.seconds)
    if args.fit_steps:
        result["fit"] = fit_rows(args.rounds, args.fit_steps)
    return emit(result, render_markdown, args.out)


if __name__ == "__main__":
    sys.exit(main())
