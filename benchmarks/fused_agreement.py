"""How closely vaezoo's fused XLA block and Keras' own loop of XLA steps agree, over seeds.

``tests/test_fused.py`` checks, for one seed, that a model trained by the fused path (one XLA program per block of
steps) ends with the weights of the same model trained by Keras' loop of XLA-compiled steps. This script runs that
comparison over many seeds, with the noise algorithm and the activation chosen, and counts the weights outside the
test's tolerance (``rtol=1e-4, atol=1e-5``). With ``--blocks`` it also prints, for each seed, the largest weight
difference after every block of steps and the biases that part first (more than 1e-5). It is the tool of
docs/results.md, run E: why drawing the noise with ThreeFry under XLA (``--algorithm threefry``,
``rng_speed.threefry_noise``: an experiment, not vaezoo's code) made this check fail.

The models and data are the tests' (``tests/conftest.py``: tiny configurations, binary sprites).

    python benchmarks/fused_agreement.py --model beta_tcvae --seeds 0-14 --algorithm philox
    python benchmarks/fused_agreement.py --model beta_tcvae --seeds 0-14 --algorithm threefry
    python benchmarks/fused_agreement.py --model beta_tcvae --seeds 0-4 --algorithm threefry --activation elu
    python benchmarks/fused_agreement.py --model beta_tcvae --seeds 0 --algorithm threefry --blocks
    python benchmarks/fused_agreement.py --model iwae_conv --seeds 0 --algorithm threefry --activation elu --blocks
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(0, str(HERE))

RTOL, ATOL = 1e-4, 1e-5  # tests/test_fused.py's tolerance for the weights


def seeds_arg(text: str) -> list[int]:
    """``"0-4,7"`` -> ``[0, 1, 2, 3, 4, 7]``."""
    out = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        out += list(range(int(lo), int(hi or lo) + 1))
    return out


def train(name: str, seed: int, fused: bool, overrides: dict, algorithm: str, epochs: int = 2):
    """The test's run (``tests/test_fused.py``): tiny model, 85 sprites in batches of 8, Adam 1e-3, XLA, 4 steps
    per execution; returns the model and the weights after every block (the first entry: before training)."""
    import keras

    import rng_speed
    from conftest import tiny
    from test_fused import STEPS_PER_EXECUTION, _data

    snaps = []

    class Snap(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            snaps.append([np.array(w.numpy()) for w in self.model.weights])

        def on_train_batch_end(self, batch, logs=None):
            snaps.append([np.array(w.numpy()) for w in self.model.weights])

    keras.utils.set_random_seed(seed)
    model = tiny(name, seed=seed, **overrides)
    model.compile(keras.optimizers.Adam(1e-3), jit_compile=True, steps_per_execution=STEPS_PER_EXECUTION)
    model.fuse_steps = fused
    forced = rng_speed.threefry_noise() if algorithm == "threefry" else contextlib.nullcontext()
    with forced:  # the functions are traced inside fit, so the algorithm holds for the whole run
        model.fit(_data(model), epochs=epochs, verbose=0, callbacks=[Snap()])
    return model, snaps


def compare(name: str, seed: int, overrides: dict, algorithm: str, blocks: bool) -> dict:
    fused, s_fused = train(name, seed, True, overrides, algorithm)
    loop, s_loop = train(name, seed, False, overrides, algorithm)
    paths = [w.path for w in loop.weights]
    outside, largest = 0, 0.0
    for a, b in zip(s_loop[-1], s_fused[-1]):
        d = np.abs(a - b)
        outside += int((d > ATOL + RTOL * np.abs(b)).sum())
        largest = max(largest, float(d.max()) if d.size else 0.0)
    row = {"model": name, "seed": seed, "algorithm": algorithm, **overrides, "weights_outside_tolerance": outside,
           "max_weight_difference": largest}
    if blocks:
        row["blocks"] = []
        for a_all, b_all in zip(s_loop, s_fused):
            diffs = [np.abs(a - b) for a, b in zip(a_all, b_all)]
            parted = {p: np.flatnonzero(d > ATOL).tolist()[:8] for p, d in zip(paths, diffs)
                      if p.endswith("/bias") and d.size and (d > ATOL).any()}
            row["blocks"].append({"max_weight_difference": max(float(d.max()) for d in diffs if d.size),
                                  "biases_parted": parted})
    return row


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="beta_tcvae")
    p.add_argument("--seeds", type=seeds_arg, default=[0])
    p.add_argument("--algorithm", choices=["philox", "threefry"], default="philox",
                   help="the posterior noise under XLA (default: vaezoo's, TensorFlow's Philox)")
    p.add_argument("--activation", help="instead of the model's activation (e.g. elu)")
    p.add_argument("--blocks", action="store_true", help="also the difference after every block of steps")
    args = p.parse_args(argv)
    overrides = {"activation": args.activation} if args.activation else {}
    for seed in args.seeds:
        print(json.dumps(compare(args.model, seed, overrides, args.algorithm, args.blocks)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
