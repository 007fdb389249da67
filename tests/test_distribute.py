"""tf.distribute: a step on N replicas equals the single-device step on the same global batch.

The replicated runs need several devices, which TensorFlow fixes at start-up, so they run in
subprocesses: two logical CPU devices under ``MirroredStrategy``, and two worker processes on
127.0.0.1 under ``MultiWorkerMirroredStrategy`` (``TF_CONFIG``).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

import vaezoo
from conftest import tiny

TESTS = Path(__file__).resolve().parent
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "VAEZOO_DISABLE_PLUGINS": "1"}
# Batch statistics (a code histogram of the batch) are not per-example means: on N replicas they
# are averages of per-replica statistics, so they are not compared.
BATCH_STATISTICS = ("perplexity", "codes_used")

# Trains each "name[:unscaled]" on fixed batches with one device, then with the strategy, from the
# same seeds, and prints the metrics of both and the largest weight difference. ":unscaled" drops
# the division of each replica's loss by the number of replicas (the negative control).
COMPARE = r"""
import json, os, sys
sys.path.insert(0, os.environ["TESTS"])
import tensorflow as tf
if os.environ.get("TF_CONFIG"):
    strategy = tf.distribute.MultiWorkerMirroredStrategy()   # first: it starts the cluster
else:
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])   # one for the whole process
import keras, numpy as np, vaezoo
from vaezoo import distribute
from conftest import tiny, batch_for

scale_loss = distribute.scale_loss

def train(name, strategy):
    keras.utils.set_random_seed(0)
    with strategy.scope():
        model = tiny(name, seed=0)
        model.compile(keras.optimizers.SGD(1e-4), jit_compile=False)   # XLA's numerics differ slightly
    batches = [batch_for(model, n=16, seed=s) for s in range(3)]   # three global batches of 16
    ds = tf.data.Dataset.from_tensor_slices(tf.nest.map_structure(lambda *b: np.stack(b), *batches))
    history = model.fit(ds, epochs=2, verbose=0, shuffle=False).history
    return history, [np.asarray(w, dtype=np.float64) for w in model.weights], model

for spec in sys.argv[1:]:
    name, _, mode = spec.partition(":")
    distribute.scale_loss = (lambda loss: loss) if mode == "unscaled" else scale_loss
    replicated, w_rep, model = train(name, strategy)
    single, w_one, _ = train(name, tf.distribute.get_strategy())
    diff = max(float(np.max(np.abs(a - b))) if a.size else 0.0 for a, b in zip(w_one, w_rep))
    print("RESULT" + json.dumps({"spec": spec, "replicas": strategy.num_replicas_in_sync, "single": single,
                                 "replicated": replicated, "max_weight_diff": diff,
                                 "steps_per_execution": int(model.steps_per_execution)}), flush=True)
"""


def _results(stdout: str) -> dict:
    return {r["spec"]: r for r in (json.loads(l[6:]) for l in stdout.splitlines() if l.startswith("RESULT"))}


def _mirrored(specs: list[str]) -> dict:
    proc = subprocess.run([sys.executable, "-c", COMPARE, *specs], capture_output=True, text=True,
                          env={**ENV, "TESTS": str(TESTS)}, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return _results(proc.stdout)


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _workers(argv: list[str], cwd: Path, timeout: float = 600, extra_env=None) -> list[str]:
    """Run ``argv`` as two workers of one cluster (TF_CONFIG); return their outputs. Both are
    killed if either fails or the time runs out."""
    cluster = {"worker": [f"127.0.0.1:{p}" for p in _free_ports(2)]}
    procs = []
    try:
        for index in range(2):
            tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
            procs.append(subprocess.Popen(argv(index) if callable(argv) else argv, cwd=cwd, text=True,
                                          env={**ENV, **(extra_env or {}), "TF_CONFIG": tf_config},
                                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
        outputs = [p.communicate(timeout=timeout)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for p, out in zip(procs, outputs):
        assert p.returncode == 0, out[-3000:]
    return outputs


def assert_same_training(result):
    """Replicated and single-device training gave the same losses, metrics and weights."""
    single, replicated = result["single"], result["replicated"]
    compared = [k for k in single if not k.startswith(BATCH_STATISTICS)]
    assert "loss" in compared and len(compared) >= 2
    # atol: a metric near zero that is a difference of larger terms (beta-TCVAE's total correlation,
    # log q(z) - sum_j log q(z_j), about -1e-3 from terms of order 10) keeps their float32 rounding,
    # which a different summation order (gathered global batch) changes by ~1e-8 in absolute value.
    for key in compared:
        np.testing.assert_allclose(replicated[key], single[key], rtol=2e-5, atol=1e-6,
                                   err_msg=f"{result['spec']}: {key}")
    assert result["max_weight_diff"] < 1e-5, result


def test_mirrored_step_equals_single_device_step():
    # vae: reparameterisation noise drawn per example of the global batch; vq_vae: EMA codebook
    # statistics summed and dead-code restarts drawn from the gathered global batch. Every model:
    # the slow test below.
    # dip_vae: a batch statistic (the covariance of the posterior means) of the gathered global batch,
    # differentiated through the gather.
    results = _mirrored(["vae", "vq_vae", "dip_vae", "vae:unscaled"])
    for spec in ("vae", "vq_vae", "dip_vae"):
        assert results[spec]["replicas"] == 2
        assert_same_training(results[spec])
        assert results[spec]["steps_per_execution"] == 1  # "auto" under MirroredStrategy
    # Negative control: without dividing each replica's loss by 2 the summed gradient is twice the
    # single-device one, and the weights move apart.
    assert results["vae:unscaled"]["max_weight_diff"] > 100 * results["vae"]["max_weight_diff"] + 1e-4


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["mirrored", "multi_worker"])
def test_every_model_trains_replicated_as_on_one_device(strategy, tmp_path):
    names = vaezoo.list_models()
    if strategy == "mirrored":
        results = [_mirrored(names)]
    else:
        outputs = _workers([sys.executable, "-c", COMPARE, *names], cwd=tmp_path, extra_env={"TESTS": str(TESTS)},
                           timeout=1800)
        results = [_results(out) for out in outputs]
    for per_process in results:
        assert sorted(per_process) == sorted(names)
        for name in names:
            assert per_process[name]["replicas"] == 2
            assert_same_training(per_process[name])
    if strategy == "multi_worker":  # both workers saw the same training
        for name in names:
            assert results[0][name]["replicated"] == results[1][name]["replicated"]


@pytest.mark.slow  # two processes training a real run (22 s): CI runs it with the slow suite
def test_two_workers_train_with_the_cli_and_hold_identical_weights(tmp_path):
    args = ["train", "vae", "--dataset", "sprites", "--limit", "256", "--epochs", "1", "--batch-size", "32",
            "--set", "hidden_units=[32]", "--set", "latent_dim=4", "--seed", "0", "--verbose", "0"]
    outputs = _workers(lambda i: [sys.executable, "-m", "vaezoo", *args, "--strategy", "multi_worker",
                                  "--out", f"worker{i}"], cwd=tmp_path)
    assert all("2 replicas in sync" in out for out in outputs), outputs[0][-2000:]
    models = [keras.models.load_model(tmp_path / d / "model.keras") for d in ("worker0", "worker1")]
    assert len(models[0].weights) == len(models[1].weights) > 0
    assert int(models[0].optimizer.iterations.numpy()) == 8  # 256 examples / global batch 32
    for a, b in zip(*(m.weights for m in models)):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)  # the workers agree exactly
    # (That they equal one device's training is checked for every model by the slow test above.)
    history = (tmp_path / "worker0" / "history.csv").read_text().splitlines()
    assert len(history) == 2 and all(np.isfinite(float(v)) for v in history[1].split(",")[1:])


def test_fast_defaults_on_one_device_and_under_mirrored_strategy(auto_xla):
    model = tiny("vae")
    model.compile(keras.optimizers.Adam(1e-3))
    assert model.jit_compile is True and model.steps_per_execution == 32
    model.compile(keras.optimizers.Adam(1e-3), jit_compile=False, steps_per_execution=4)  # the user's choice wins
    assert model.jit_compile is False and model.steps_per_execution == 4
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    with strategy.scope():
        replicated = tiny("vae")
        replicated.compile(keras.optimizers.Adam(1e-3))
        assert replicated.jit_compile is False and replicated.steps_per_execution == 1
        with pytest.raises(ValueError, match=r"jit_compile=True is not supported under MirroredStrategy.*device-placement"):
            replicated.compile(keras.optimizers.Adam(1e-3), jit_compile=True)
        with pytest.raises(ValueError, match=r"steps_per_execution=8 is not supported under MirroredStrategy"):
            replicated.compile(keras.optimizers.Adam(1e-3), steps_per_execution=8)
    with pytest.raises(ValueError, match=r"jit_compile must be 'auto', True or False, got 'yes'"):
        model.compile(jit_compile="yes")
    with pytest.raises(ValueError, match=r"steps_per_execution must be 'auto' or an integer >= 1, got 0"):
        model.compile(steps_per_execution=0)


def test_cli_rejects_an_unknown_strategy(capsys):
    from vaezoo import cli

    with pytest.raises(SystemExit):
        cli.main(["train", "vae", "--strategy", "tpu"])
    assert "invalid choice: 'tpu'" in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"Unknown strategy 'tpu'; valid choices: default, mirrored, multi_worker"):
        vaezoo.distribute.strategy("tpu")
