"""Training throughput of every model family, against a plain hand-written Keras 3 VAE.

Examples per second of ``model.fit`` at batch 128 on MNIST-sized inputs (28x28x1 binary images;
code maps for the priors), for:

* vaezoo's ``vae`` with its defaults (XLA, 32 steps per execution), with XLA off, and with Keras'
  default compile settings (no XLA on CPU, one step per execution);
* the plain VAE of ``benchmarks/plain_vae.py`` (the same layers, Adam(1e-3), batch 128) with Keras'
  defaults, and with XLA + 32 steps per execution;
* every other family (beta_vae, vae_conv, iwae, vae_vamp, vq_vae, vq_vae2, pixelcnn_prior,
  hierarchical_pixelcnn_prior; registry configs) with vaezoo's defaults and with XLA off, and for
  ``vae_conv``, ``iwae`` (K = 5), ``vae_vamp``, ``vq_vae`` and ``vq_vae2`` their hand-written twins (``plain_vae.plain_twin``:
  the same networks and loss) with Keras' defaults and with XLA + 32 steps per execution, each ratio per round;
* ``iwae`` with K = 1, 5, 10, 20 importance samples (cost against the encoder + K decoders' work);
* ``vae`` fed by the real tf.data pipeline (MNIST IDX files, a fresh index permutation per epoch,
  batches gathered from memory, dynamic binarisation, prefetch; full epochs of 468 steps) against
  the same number of steps on pre-materialised tensors (needs the data; skipped without it).

All models are built and warmed up (traced, XLA-compiled) first; then the configurations are timed
one after another in each of ``--repeats`` rounds, so that pairs are measured side by side, and
the median over rounds is reported (for the headline ratios, also the median of the per-round
ratios). Also: achieved GFLOP/s of the MLP VAE's training step (counted matmul FLOPs) against
the throughput of the same matmuls alone, measured in every round beside the models
(independent, and in sequence as in a step; see :class:`MatmulProbe`), and the peak memory of training each model
at batch 128 (a fresh process per model: peak RSS during ``fit`` minus RSS before it, and the
peak RSS of the whole process).

    python benchmarks/throughput.py --data-dir ../shared/data --repeats 5 --out throughput.json
    python benchmarks/throughput.py --report throughput.json   # the Markdown tables of docs/results.md
    python benchmarks/throughput.py --twins-only --families vq_vae vq_vae2 --repeats 3 --out twins.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import vaezoo  # noqa: E402
from vaezoo import data  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import add_output_args, emit, print_report  # noqa: E402
from plain_vae import TWINS, plain_twin  # noqa: E402

BATCH = 128
FAMILIES = ("beta_vae", "vae_conv", "iwae", "vae_vamp", "vae_planar", "miwae", "vq_vae", "vq_vae2", "pixelcnn_prior",
            "hierarchical_pixelcnn_prior")
IWAE_K = (1, 5, 10, 20)
# The MLP VAE's dense layers (in, out): encoder, mean/log-variance head, decoder.
VAE_DENSE = ((784, 512), (512, 256), (256, 64), (32, 256), (256, 512), (512, 784))


def vae_train_flops_per_example() -> int:
    """Matmul FLOPs of one training example: forward 2*in*out per layer; backward 2*in*out for the
    weight gradient and 2*in*out for the input gradient (not for the first layer, whose input is data)."""
    forward = sum(2 * i * o for i, o in VAE_DENSE)
    return 3 * forward - 2 * VAE_DENSE[0][0] * VAE_DENSE[0][1]


class MatmulProbe:
    """GFLOP/s of the VAE step's matmuls alone (same shapes: forward, input and weight gradients),
    measured once per round beside the training configurations.

    ``in_sequence=False``: the matmuls are independent, so TensorFlow may run two at once (an upper
    bound). ``in_sequence=True``: each matmul's input depends on the previous result, as in a
    training step, where every layer waits for the one before it.
    """

    def __init__(self, in_sequence: bool, batch: int = BATCH):
        rng = np.random.default_rng(0)
        shapes = []
        for n, (i, o) in enumerate(VAE_DENSE):
            shapes.append(((batch, i), (i, o)))  # forward
            shapes.append(((i, batch), (batch, o)))  # weight gradient
            if n:
                shapes.append(((batch, o), (o, i)))  # input gradient
        pairs = [(tf.constant(rng.standard_normal(a), tf.float32), tf.constant(rng.standard_normal(b), tf.float32))
                 for a, b in shapes]
        self.flops = sum(2 * a[0] * a[1] * b[1] for a, b in shapes)
        self.label = "matmuls alone, " + ("in sequence" if in_sequence else "independent")
        self.rates: list[float] = []
        self.calls = 1

        @tf.function
        def run():
            total = tf.constant(0.0)
            for a, b in pairs:
                if in_sequence:
                    a = a + total * 0.0  # a data dependence on the previous matmul (negligible work)
                total += tf.reduce_sum(tf.matmul(a, b)[:1, :1])
            return total

        self.run = run

    def _time(self, calls: int) -> float:
        start = time.perf_counter()
        for _ in range(calls):
            self.run().numpy()
        return time.perf_counter() - start

    def warm_up(self, target_s: float):
        self._time(10)
        self.calls = max(10, round(target_s / (self._time(20) / 20)))

    def measure(self):
        self.rates.append(self.flops * self.calls / self._time(self.calls) / 1e9)

    @property
    def rate(self) -> float:
        return statistics.median(self.rates)


def batch_for(model, rng) -> object:
    """A batch of 128 MNIST-sized binary images, or code maps for a prior over codes."""
    if model.input_kind == "codes":
        levels = getattr(model, "code_levels", None)
        if levels:
            return {lvl: rng.integers(0, model.num_codes, (BATCH, *getattr(model, f"{lvl}_shape"))).astype("int32")
                    for lvl in levels}
        return rng.integers(0, model.num_codes, (BATCH, *model.code_shape)).astype("int32")
    return (rng.random((BATCH, *model.data_shape)) < 0.13).astype("float32")  # MNIST's ink fraction


class EpochTimer(keras.callbacks.Callback):
    """Wall time from the start to the end of the (single) epoch of a ``fit`` call."""

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds = time.perf_counter() - self.start


class Config:
    """One timed configuration: a compiled model and the data set it trains on.

    Times the epoch (callback), not the whole ``fit`` call: with tf.data autotune on (the default
    for a plain ``tf.data.Dataset``), tearing down the iterator waits for autotune's optimisation
    thread, whose sleep doubles from 10 ms, so a ``fit`` call's wall time is rounded up to
    0.64 s x 2^n whatever the model (measured by :func:`teardown`; vaezoo's loaders turn it off).
    """

    def __init__(self, label: str, setting: str, model, dataset, steps: int | None = None):
        self.label, self.setting, self.model, self.dataset = label, setting, model, dataset
        self.steps = steps
        self.rates: list[float] = []

    def fit(self, steps: int) -> float:
        timer = EpochTimer()
        self.model.fit(self.dataset, epochs=1, steps_per_epoch=steps, verbose=0, callbacks=[timer])
        return timer.seconds

    def warm_up(self, target_s: float):
        self.fit(int(self.model.steps_per_execution))  # trace (and XLA-compile): one execution
        if self.steps is None:  # steps for ~target_s per measurement, a multiple of 32
            per_step = self.fit(32) / 32
            self.steps = 32 * max(1, round(target_s / per_step / 32))

    def measure(self):
        self.rates.append(self.steps * BATCH / self.fit(self.steps))

    @property
    def rate(self) -> float:
        return statistics.median(self.rates)


def vaezoo_model(name: str, setting: str, **overrides):
    keras.utils.set_random_seed(0)
    model = vaezoo.get(name, seed=0, **overrides)
    compile_kwargs = {"defaults": {}, "XLA off": {"jit_compile": False},
                      "Keras defaults": {"jit_compile": False, "steps_per_execution": 1}}[setting]
    model.compile(keras.optimizers.Adam(1e-3), **compile_kwargs)
    return model


def plain_model(setting: str, name: str = "vae"):
    """The plain Keras equivalent of the vaezoo model ``name`` (:func:`plain_vae.plain_twin`)."""
    keras.utils.set_random_seed(0)
    model = plain_twin(name)
    if setting == "Keras defaults":
        model.compile(keras.optimizers.Adam(1e-3))  # jit_compile="auto" (no XLA on CPU), steps_per_execution=1
    else:
        model.compile(keras.optimizers.Adam(1e-3), jit_compile=True, steps_per_execution=32)
    return model


def in_memory(batch) -> tf.data.Dataset:
    return tf.data.Dataset.from_tensors(batch).repeat()


def twin_configs(names) -> list[Config]:
    """Each family with its defaults and XLA off, beside its plain twin with Keras' defaults and XLA + 32 steps."""
    rng = np.random.default_rng(0)
    configs = []
    for name in names:
        for setting in ("defaults", "XLA off"):
            model = vaezoo_model(name, setting)
            configs.append(Config(name, setting, model, in_memory(batch_for(model, rng))))
        for setting in ("Keras defaults", "XLA + 32 steps/execution"):
            configs.append(Config(f"plain Keras {name}", setting, plain_model(setting, name),
                                  in_memory(batch_for(model, rng))))
    return configs


def twin_ratios(configs, names) -> dict:
    """Per family: its defaults and XLA-off rates over its twin's, per round."""
    rates = {(c.label, c.setting): c.rates for c in configs}
    paired = {}
    for name in names:
        for mine, short in (("defaults", "defaults"), ("XLA off", "XLA off")):
            for setting, twin in (("Keras defaults", "Keras defaults"), ("XLA + 32 steps/execution", "XLA+32")):
                paired[f"{name} {short} / plain {name} {twin}"] = per_round_summary(
                    [a / b for a, b in zip(rates[(name, mine)], rates[(f"plain Keras {name}", setting)])])
    return paired


def build_configs(args) -> list[Config]:
    rng = np.random.default_rng(0)
    configs = []
    images = batch_for(vaezoo_model("vae", "defaults"), rng)
    for setting in ("defaults", "XLA off", "Keras defaults"):
        configs.append(Config("vae", setting, vaezoo_model("vae", setting), in_memory(images)))
    for setting in ("Keras defaults", "XLA + 32 steps/execution"):
        configs.append(Config("plain Keras VAE", setting, plain_model(setting), in_memory(images)))
    for name in args.families:
        for setting in ("defaults", "XLA off"):
            model = vaezoo_model(name, setting)
            configs.append(Config(name, setting, model, in_memory(batch_for(model, rng))))
        if name in TWINS:  # its hand-written twin, with Keras' defaults and with vaezoo's fast flags
            for setting in ("Keras defaults", "XLA + 32 steps/execution"):
                configs.append(Config(f"plain Keras {name}", setting, plain_model(setting, name),
                                      in_memory(batch_for(model, rng))))
    for k in IWAE_K:
        model = vaezoo_model("iwae", "defaults", num_samples=k)
        configs.append(Config("iwae", f"K={k}", model, in_memory(batch_for(model, rng))))
    if args.data_dir and (Path(args.data_dir) / "mnist").is_dir():
        pipeline = data.load("mnist", "train", batch_size=BATCH, data_dir=args.data_dir, binarize="dynamic", seed=0)
        steps = int(pipeline.cardinality()) - 1  # full batches of one epoch
        materialised = list(pipeline.take(steps).as_numpy_iterator())
        tensors = tf.data.Dataset.from_tensor_slices(np.stack(materialised))
        configs.append(Config("vae", "tf.data pipeline (full epochs)", vaezoo_model("vae", "defaults"),
                              pipeline.take(steps), steps=steps))
        configs.append(Config("vae", "pre-materialised tensors", vaezoo_model("vae", "defaults"), tensors, steps=steps))
    return configs


def teardown(repeats: int = 5, steps: int = 200) -> dict:
    """Wall time of whole ``fit`` calls (``vae``, Keras' compile defaults, ``steps`` steps on an
    in-memory batch) with tf.data autotune on (the default) and off: the iterator teardown stall."""
    keras.utils.set_random_seed(0)
    model = vaezoo_model("vae", "Keras defaults")
    batch = batch_for(model, np.random.default_rng(0))
    options = tf.data.Options()
    options.autotune.enabled = False
    datasets = {"autotune on": in_memory(batch), "autotune off": in_memory(batch).with_options(options)}
    model.fit(datasets["autotune on"], epochs=1, steps_per_epoch=steps, verbose=0)
    times = {k: [] for k in datasets}
    for _ in range(repeats):
        for key, ds in datasets.items():
            start = time.perf_counter()
            model.fit(ds, epochs=1, steps_per_epoch=steps, verbose=0)
            times[key].append(round(time.perf_counter() - start, 3))
    return {"steps": steps, **{f"fit seconds, {k}": v for k, v in times.items()}}


def peak_memory(name: str) -> dict:
    """Run in a fresh process: RSS before fit, peak RSS during fit (MB), for one model at batch 128."""
    def status(field):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
        raise KeyError(field)

    name, _, setting = name.partition(":")
    setting = setting or "defaults"
    model = plain_model(setting) if name == "plain" else vaezoo_model(name, setting)
    dataset = in_memory(batch_for(model, np.random.default_rng(0)))
    before = status("VmRSS")
    model.fit(dataset, epochs=1, steps_per_epoch=2 * int(model.steps_per_execution), verbose=0)
    peak = status("VmHWM")
    return {"model": name, "setting": setting, "rss_before_fit_mb": round(before, 1), "peak_rss_mb": round(peak, 1),
            "training_peak_mb": round(peak - before, 1)}


def per_round_summary(per_round: list[float]) -> dict:
    """Median, min, max and the values of a ratio measured once per round."""
    return {"median": statistics.median(per_round), "min": min(per_round), "max": max(per_round),
            "rounds": [round(r, 3) for r in per_round]}


def render_markdown(results: dict) -> str:
    """The results (as written by ``--out``) as the Markdown tables of docs/results.md."""
    def table(header, rows):
        return "\n".join(["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
                         + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows])

    out = [table(["model", "setting", "steps per measurement", f"examples/s (median of {results['repeats']})", "rounds"],
                 [[r["model"], r["setting"], r["steps"], r["examples_per_s"], ", ".join(map(str, r["rates"]))]
                  for r in results["rows"]])]
    if results.get("twins_only"):
        out += ["", "Ratios per round (each family against its plain twin, measured side by side in each round):", ""]
        out += [f"- {k}: median **{v['median']:.2f}x** (min {v['min']:.2f}, max {v['max']:.2f}; rounds "
                f"{', '.join(f'{r:.2f}' for r in v['rounds'])})" for k, v in results["paired_ratios"].items()]
        return "\n".join(out)
    out += ["", "Ratios of the medians:", ""]
    out += [f"- {k}: **{v:.2f}x**" for k, v in results["ratios"].items()]
    out += ["", "Ratios per round (the two configurations measured side by side in each round):", ""]
    out += [f"- {k}: median **{v['median']:.2f}x** (min {v['min']:.2f}, max {v['max']:.2f}; rounds "
            f"{', '.join(f'{r:.2f}' for r in v['rounds'])})" for k, v in results["paired_ratios"].items()]
    out += ["", table(["K", "time per example / K=1", "encoder + K decoders' weights / K=1"],
                      [[r["K"], f"{r['time_ratio']:.2f}", f"{r['work_ratio']:.2f}"] for r in results["iwae"]])]
    out += ["", "GFLOP/s (matmul FLOPs of the MLP VAE's training step; medians):", ""]
    out += [f"- {k}: {v:.1f}" for k, v in results["gflops"].items()]
    out += ["", table(["model", "setting", "RSS before fit (MB)", "peak RSS (MB)", "peak - before (MB)"],
                      [[m["model"], m.get("setting", ""), m.get("rss_before_fit_mb", ""), m.get("peak_rss_mb", ""),
                        m.get("training_peak_mb", m.get("error", ""))] for m in results["memory"]])]
    out += ["", "Teardown: " + json.dumps(results["teardown"])]
    return "\n".join(out)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default=os.environ.get(data.DATA_DIR_ENV))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=1.5, help="target seconds per measurement")
    add_output_args(parser)
    parser.add_argument("--families", nargs="*", default=list(FAMILIES), choices=("vae", *FAMILIES),
                        help="the other families to time (default: all; vae only with --twins-only, the full run "
                             "measures it as its baseline)")
    parser.add_argument("--twins-only", action="store_true",
                        help="only --families that have a plain twin, each beside it (no VAE baseline, IWAE sweep, "
                             "pipeline, memory or teardown)")
    parser.add_argument("--memory-of", help=argparse.SUPPRESS)  # internal: one model's peak memory
    args = parser.parse_args()
    if args.report:
        return print_report(args.report, render_markdown)
    if args.memory_of:
        print("MEMORY" + json.dumps(peak_memory(args.memory_of)))
        return

    if "vae" in args.families and not args.twins_only:
        parser.error("--families vae needs --twins-only: the full run measures vae as its baseline")
    if args.twins_only:
        names = [n for n in args.families if n in TWINS]
        configs = twin_configs(names)
        for c in configs:
            c.warm_up(args.seconds)
        for _ in range(args.repeats):
            for c in configs:
                c.measure()
        results = {"batch": BATCH, "repeats": args.repeats, "twins_only": True,
                   "rows": [{"model": c.label, "setting": c.setting, "steps": c.steps, "examples_per_s": round(c.rate),
                             "rates": [round(r) for r in c.rates]} for c in configs],
                   "paired_ratios": twin_ratios(configs, names), "tensorflow": tf.__version__,
                   "keras": keras.__version__, "cpus": os.cpu_count()}
        return emit(results, render_markdown, args.out)

    configs = build_configs(args)
    probes = [MatmulProbe(in_sequence=False), MatmulProbe(in_sequence=True)]
    for c in configs + probes:
        c.warm_up(args.seconds)
    for _ in range(args.repeats):  # alternate: every configuration (and the matmul probes) once per round
        for c in configs + probes:
            c.measure()
    rows = [{"model": c.label, "setting": c.setting, "steps": c.steps,
             "examples_per_s": round(c.rate), "rates": [round(r) for r in c.rates]} for c in configs]
    by = {(c.label, c.setting): c.rate for c in configs}
    plain = by[("plain Keras VAE", "Keras defaults")]
    ratios = {
        "vae defaults / plain Keras defaults": by[("vae", "defaults")] / plain,
        "vae XLA off / plain Keras defaults": by[("vae", "XLA off")] / plain,
        "vae Keras defaults / plain Keras defaults": by[("vae", "Keras defaults")] / plain,
        "plain XLA+32 / plain Keras defaults": by[("plain Keras VAE", "XLA + 32 steps/execution")] / plain,
    }
    # The same ratios per round (the pair measured side by side), robust to the machine drifting between rounds.
    rates = {(c.label, c.setting): c.rates for c in configs}
    plain_rounds = rates[("plain Keras VAE", "Keras defaults")]
    paired = {}
    for key, (label, setting) in {"vae defaults / plain Keras defaults": ("vae", "defaults"),
                                  "vae XLA off / plain Keras defaults": ("vae", "XLA off")}.items():
        paired[key] = per_round_summary([a / b for a, b in zip(rates[(label, setting)], plain_rounds)])
    paired["vae defaults / plain XLA+32"] = per_round_summary(
        [a / b for a, b in zip(rates[("vae", "defaults")], rates[("plain Keras VAE", "XLA + 32 steps/execution")])])
    for name in (n for n in args.families if n in TWINS):  # each family against its plain twin
        for setting, short in (("Keras defaults", "Keras defaults"), ("XLA + 32 steps/execution", "XLA+32")):
            paired[f"{name} defaults / plain {name} {short}"] = per_round_summary(
                [a / b for a, b in zip(rates[(name, "defaults")], rates[(f"plain Keras {name}", setting)])])
    # IWAE: time per example relative to K=1, against the work of the encoder plus K decoders.
    iwae = vaezoo.get("iwae")
    enc = sum(np.prod(w.shape) for w in iwae.encoder.weights + iwae.posterior_layer.weights if len(w.shape) == 2)
    dec = sum(np.prod(w.shape) for w in iwae.decoder.weights if len(w.shape) == 2)
    iwae_rows = [{"K": k, "time_ratio": by[("iwae", "K=1")] / by[("iwae", f"K={k}")],
                  "work_ratio": (enc + k * dec) / (enc + dec)} for k in IWAE_K]
    flops = vae_train_flops_per_example()
    gflops = {"vae_train_mflop_per_example": flops / 1e6,
              **{f"{p.label} (median)": p.rate for p in probes},
              **{f"{label} {setting}": by[(label, setting)] * flops / 1e9
                 for label, setting in [("vae", "defaults"), ("vae", "XLA off"), ("vae", "Keras defaults"),
                                        ("plain Keras VAE", "Keras defaults"), ("plain Keras VAE", "XLA + 32 steps/execution")]}}
    # The step's share of the matmul rate, per round (the machine's speed drifts between rounds).
    vae_rounds = [r * flops / 1e9 for r in rates[("vae", "defaults")]]
    for p in probes:
        paired[f"vae defaults GFLOP/s / {p.label}"] = {
            **per_round_summary([a / b for a, b in zip(vae_rounds, p.rates)]),
            "matmul_gflops_rounds": [round(r, 1) for r in p.rates]}
    memory = []
    for name in ("plain:Keras defaults", "plain:XLA + 32 steps/execution", "vae:Keras defaults", "vae",
                 *args.families):
        proc = subprocess.run([sys.executable, __file__, "--memory-of", name], capture_output=True, text=True)
        line = [l for l in proc.stdout.splitlines() if l.startswith("MEMORY")]
        memory.append(json.loads(line[-1][6:]) if line else {"model": name, "error": proc.stderr[-500:]})
    stall = teardown()
    results = {"batch": BATCH, "repeats": args.repeats, "rows": rows, "ratios": ratios, "paired_ratios": paired, "iwae": iwae_rows,
               "gflops": gflops, "memory": memory, "teardown": stall, "tensorflow": tf.__version__, "keras": keras.__version__,
               "cpus": os.cpu_count()}
    return emit(results, render_markdown, args.out)


if __name__ == "__main__":
    sys.exit(main())
