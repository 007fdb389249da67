"""Fault injection: kills at any instant of a run's writes, corrupt resume files, non-finite losses,
two runs on one folder, and a table of bad values and inputs, each with one clear message.

The kill tests run `vaezoo train` in a child process (tests/fault_runner.py) that SIGKILLs itself
at the K-th Python call made while the run writes its files (the end of the second of three
epochs: checkpoint, last.keras, history, state; then model.keras, samples, the finished mark),
for K spread evenly over all such calls; the same command, rerun, must finish and lose at most
the epoch that was in progress.
"""

from __future__ import annotations

import csv
import errno
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

import vaezoo
from vaezoo import cli, config, data, fileio, runs, training

from conftest import batch_for, tiny

HERE = Path(__file__).resolve().parent
RUNNER = HERE / "fault_runner.py"
SMALL = ["--set", "hidden_units=[16]", "--set", "latent_dim=2", "--dataset", "sprites", "--binarize", "none",
         "--limit", "256", "--batch-size", "64", "--set", "jit_compile=false", "--verbose", "0", "--seed", "0"]


def _env():
    env = {k: v for k, v in os.environ.items()}
    env.update(TF_CPP_MIN_LOG_LEVEL="3", VAEZOO_DISABLE_PLUGINS="1",
               PYTHONPATH=os.pathsep.join([str(HERE.parent), env.get("PYTHONPATH", "")]))
    return env


def _train_child(kill_at: int, out: Path, *extra: str) -> subprocess.CompletedProcess:
    argv = [sys.executable, str(RUNNER), str(kill_at), "train", "vae", *SMALL, "--epochs", "3", "--out", str(out),
            *extra]
    return subprocess.run(argv, capture_output=True, text=True, env=_env(), timeout=300, cwd=out.parent)


def _history_epochs(out: Path) -> list[int]:
    with open(out / "history.csv") as f:
        return [int(row["epoch"]) for row in csv.DictReader(f)]


@pytest.fixture(scope="module")
def write_calls(tmp_path_factory) -> int:
    """How many Python calls a clean run makes while writing (the span the kills are spread over)."""
    out = tmp_path_factory.mktemp("dry") / "run"
    out.parent.mkdir(exist_ok=True)
    proc = _train_child(0, out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    calls = int(re.search(r"CALLS (\d+)", proc.stdout).group(1))
    assert calls > 100
    return calls


def _kill_and_rerun(tmp_path: Path, kill_at: int):
    out = tmp_path / "run"
    killed = _train_child(kill_at, out)
    assert killed.returncode == -signal.SIGKILL, (killed.returncode, killed.stderr[-2000:])
    done_before = (runs.read_state(out) or {}).get("epochs_done", 0) if (out / runs.STATE_FILE).exists() else 0
    assert done_before >= 1, "the first epoch had finished before the kill"
    rerun = _train_child(0, out)  # the same command
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    resumed = re.search(r"resuming at epoch (\d+)", rerun.stdout)
    finished = "finished run" in rerun.stdout
    assert resumed or finished, rerun.stdout
    if resumed:  # at most the epoch in progress (the second, 1-based 2) is trained again
        assert int(resumed.group(1)) >= 2, rerun.stdout
    assert _history_epochs(out) == [0, 1, 2]
    state = runs.read_state(out)
    assert state["finished"] and state["epochs_done"] == 3
    assert keras.models.load_model(out / "model.keras").registry_name == "vae"
    assert keras.models.load_model(out / "checkpoints" / "last.keras").optimizer.iterations.numpy() == 12
    assert not list(out.rglob(f"{fileio.PARTIAL_PREFIX}*")), "a half-written file was left behind"


def _spread(calls: int, count: int) -> list[int]:
    # Up to 99% of the span: the number of calls varies slightly from run to run.
    last = int(calls * 0.99)
    return sorted({1 + (i * (last - 1)) // (count - 1) for i in range(count)})


def test_kill_during_the_writes_then_rerun_finishes(tmp_path, write_calls):
    _kill_and_rerun(tmp_path, write_calls // 2)  # the slow suite kills at 24 moments


@pytest.mark.slow
@pytest.mark.parametrize("index", range(24))
def test_kill_at_24_moments_over_the_epoch_end_and_final_writes(tmp_path, write_calls, index):
    _kill_and_rerun(tmp_path, _spread(write_calls, 24)[index])


# ---- unreadable resume files --------------------------------------------------------------------


@pytest.fixture
def two_epoch_run(tmp_path):
    """A run folder after two epochs of fit with the standard callbacks; returns (folder, dataset)."""
    model = tiny("vae")
    ds = tf.data.Dataset.from_tensors(batch_for(model, n=16)).repeat(3)  # 3 steps per epoch
    model.compile(keras.optimizers.Adam(1e-3))
    model.fit(ds, epochs=2, verbose=0, callbacks=training.standard_callbacks(tmp_path))
    return tmp_path, ds


def _resume(folder, ds, epochs=3):
    model = tiny("vae")
    model.compile(keras.optimizers.Adam(1e-3))
    history = model.fit(ds, epochs=epochs, verbose=0, callbacks=training.standard_callbacks(folder))
    return model, history


@pytest.mark.parametrize("damage", ["truncate", "empty", "old_format"])
def test_unreadable_state_falls_back_to_the_newest_checkpoint(two_epoch_run, damage):
    folder, ds = two_epoch_run
    state = folder / runs.STATE_FILE
    text = state.read_text()
    state.write_text({"truncate": text[: len(text) // 2], "empty": "", "old_format": '{"epoch": 2}'}[damage])
    with pytest.warns(runs.RunWarning, match="state.json is unreadable"):
        model, history = _resume(folder, ds)
    assert history.epoch == [2]  # epochs 0 and 1 kept
    assert int(model.optimizer.iterations) == 9
    assert _history_epochs(folder) == [0, 1, 2]
    assert runs.read_state(folder)["epochs_done"] == 3


def test_truncated_checkpoint_falls_back_to_the_one_before(two_epoch_run):
    folder, ds = two_epoch_run
    newest = folder / "checkpoints" / "epoch_0002.keras"
    newest.write_bytes(newest.read_bytes()[:1400])
    with pytest.warns(runs.RunWarning, match="epoch_0002.keras is unreadable"):
        _, history = _resume(folder, ds)
    assert history.epoch == [1, 2]  # one epoch lost, not the run
    assert _history_epochs(folder) == [0, 1, 2]


def test_no_readable_checkpoint_starts_again_with_a_warning(two_epoch_run):
    folder, ds = two_epoch_run
    for _, path in runs.epoch_checkpoints(folder):
        path.write_bytes(b"")
    (folder / runs.HISTORY_FILE).write_text("epoch,loss\n0,not-a-number\n")
    with pytest.warns(runs.RunWarning, match="could be read; training starts from scratch"):
        _, history = _resume(folder, ds, epochs=1)
    assert history.epoch == [0]
    assert _history_epochs(folder) == [0]


# ---- non-finite losses ----------------------------------------------------------------------------


def test_nan_stops_training_and_keeps_the_last_good_checkpoint(two_epoch_run):
    folder, ds = two_epoch_run
    good = (folder / "checkpoints" / "epoch_0002.keras").read_bytes()
    model = tiny("vae")
    model.compile(keras.optimizers.Adam(1e-3))

    class Diverge(keras.callbacks.Callback):  # after the restore (which brings back the optimizer's rate)
        def on_train_begin(self, logs=None):
            self.model.optimizer.learning_rate.assign(1e6)

    with pytest.raises(vaezoo.callbacks.NonFiniteLossError, match=r"epoch 3, step \d.*learning rate too high") as info:
        model.fit(ds, epochs=4, verbose=0, callbacks=[*training.standard_callbacks(folder), Diverge()])
    assert info.value.epoch == 2
    assert runs.read_state(folder)["epochs_done"] == 2
    assert [n for n, _ in runs.epoch_checkpoints(folder)] == [2, 1]
    assert (folder / "checkpoints" / "epoch_0002.keras").read_bytes() == good
    _, history = _resume(folder, ds)  # the last good checkpoint resumes
    assert history.epoch == [2]


def test_cli_nan_run_over_a_good_run_overwrites_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    base = ["train", "vae", *SMALL, "--epochs", "1", "--out", str(out)]
    assert cli.main(base) == 0
    files = {p: p.read_bytes() for p in [out / "model.keras", out / "config.yaml", out / "state.json",
                                        out / "checkpoints" / "epoch_0001.keras", out / "samples.png"]}
    capsys.readouterr()
    code = cli.main([*base, "--overwrite", "--set", "learning_rate=1e6", "--epochs", "2"])
    err = capsys.readouterr().err
    assert code == cli.DIVERGED
    assert "training diverged" in err and "epoch 1" in err and "learning rate too high (now 1e+06)" in err
    assert len(err.strip().splitlines()) == 1
    for path, content in files.items():
        assert path.read_bytes() == content, f"{path} was overwritten"
    assert keras.models.load_model(out / "model.keras").registry_name == "vae"
    assert cli.main(base) == 0 and "finished run" in capsys.readouterr().out  # still the good, finished run


# ---- one run per folder ---------------------------------------------------------------------------


def test_a_second_run_on_a_locked_folder_exits_at_once_naming_the_holder(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from vaezoo.runs import RunLock; lock = RunLock(sys.argv[1]).acquire(); "
        "print('locked', flush=True); time.sleep(120)"), str(out)],
        stdout=subprocess.PIPE, text=True, env={**_env(), "PYTHONPATH": str(HERE.parent)})
    try:
        assert holder.stdout.readline().strip() == "locked"
        start = time.monotonic()
        assert cli.main(["train", "vae", *SMALL, "--epochs", "1", "--out", str(out)]) == 2
        assert time.monotonic() - start < 10
        err = capsys.readouterr().err
        assert f"is in use by pid {holder.pid}" in err and "another --out" in err
        assert sorted(p.name for p in out.iterdir()) == [".lock"]  # nothing touched
    finally:
        holder.kill()
        holder.wait()
    # The holder was killed: its lock is stale, and the next run takes it over.
    assert cli.main(["train", "vae", *SMALL, "--epochs", "1", "--out", str(out)]) == 0
    assert "took over the lock of an earlier run" in capsys.readouterr().out


def test_rerun_semantics_finished_longer_and_other_config(tmp_path, capsys):
    out = tmp_path / "run"
    base = ["train", "vae", *SMALL, "--out", str(out)]
    assert cli.main([*base, "--epochs", "1"]) == 0
    model_bytes = (out / "model.keras").read_bytes()
    capsys.readouterr()
    assert cli.main([*base, "--epochs", "1"]) == 0  # finished: nothing changes
    assert "finished run of vae (1 epochs); nothing to do" in capsys.readouterr().out
    assert (out / "model.keras").read_bytes() == model_bytes
    assert cli.main([*base, "--epochs", "1", "--set", "latent_dim=3"]) == 2  # refused, showing the difference
    assert "config.latent_dim: 2 -> 3" in capsys.readouterr().err
    assert (out / "model.keras").read_bytes() == model_bytes
    assert "latent_dim: 2" in (out / "config.yaml").read_text()
    assert cli.main([*base, "--epochs", "2"]) == 0  # longer: continues
    assert "resuming at epoch 2" in capsys.readouterr().out
    assert _history_epochs(out) == [0, 1]
    assert cli.main([*base, "--epochs", "1", "--set", "latent_dim=3", "--overwrite"]) == 0
    assert _history_epochs(out) == [0]
    assert "latent_dim: 3" in (out / "config.yaml").read_text()
    assert [n for n, _ in runs.epoch_checkpoints(out)] == [1]


# ---- every mistake gets one clear line ------------------------------------------------------------


@pytest.fixture(scope="module")
def vae_checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "vae.keras"
    tiny("vae").save(path)
    return path


@pytest.fixture
def corrupt_mnist(tmp_path):
    root = tmp_path / "data"
    (root / "mnist").mkdir(parents=True)
    (root / "mnist" / "train-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8b\x08\x00truncated")
    return root


CLI_MISTAKES = [
    (["train", "vae", "--set", "hidden_units=[1,2"], ["'hidden_units'", "not valid YAML"]),
    (["config", "vae", "--set", "beta=1"], ["Unknown config key 'beta'"]),
    (["config", "beta_vae", "--set", "beta=nan"], ["'beta'", ">= 0", "nan"]),
    (["config", "vae", "--set", "prior_components=0"], ["'prior_components'", ">= 1", "got 0"]),
    (["config", "vae", "--set", "latent_dim=0"], ["'latent_dim'", ">= 1", "got 0"]),
    (["config", "vae", "--set", "latent_dim=-1"], ["'latent_dim'", ">= 1", "got -1"]),
    (["config", "vae", "--set", "learning_rate=0"], ["'learning_rate'", "> 0"]),
    (["train", "vae", "--batch-size", "0", "--dataset", "sprites"], ["'batch_size'", ">= 1", "got 0"]),
    (["train", "vae", "--epochs", "0", "--dataset", "sprites"], ["'epochs'", ">= 1", "got 0"]),
    (["train", "vae", "--dataset", "sprites", "--out", "{file}/sub"], ["--out", "is a file"]),
    (["train", "vae", "--dataset", "sprites", "--out", "{file}"], ["--out", "is a file"]),
    (["train", "vae", "--data-dir", "{corrupt}"], ["train-images-idx3-ubyte.gz", "corrupt or truncated"]),
    (["evaluate", "iwae", "--checkpoint", "{vae}", "--dataset", "sprites"], ["holds a 'vae' model, not 'iwae'"]),
    (["sample", "beta_vae", "--checkpoint", "{vae}", "--out", "g.png"], ["holds a 'vae' model, not 'beta_vae'"]),
    (["export", "iwae", "--checkpoint", "{vae}", "--format", "tflite"], ["holds a 'vae' model, not 'iwae'"]),
    (["evaluate", "vae", "--checkpoint", "{file}", "--dataset", "sprites"], ["cannot be loaded"]),
    (["export", "vea", "--checkpoint", "{vae}", "--format", "tflite"], ["Unknown model 'vea'", "Did you mean 'vae'"]),
]


@pytest.mark.parametrize("argv,needles", CLI_MISTAKES, ids=[" ".join(a[:4]) for a, _ in CLI_MISTAKES])
def test_cli_mistakes_get_one_clear_line(argv, needles, tmp_path, corrupt_mnist, vae_checkpoint, capsys,
                                         monkeypatch):
    monkeypatch.chdir(tmp_path)
    afile = tmp_path / "afile.txt"
    afile.write_text("not a folder")
    argv = [a.format(file=afile, corrupt=corrupt_mnist, vae=vae_checkpoint) for a in argv]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, (needle, err)


@pytest.mark.parametrize("argv,needle", [
    (["train", "vae", "--limit", "0"], "--limit: must be an integer >= 1, got 0"),
    (["evaluate", "vae", "--checkpoint", "x", "--num-samples", "-1"], "must be an integer >= 0"),
])
def test_argument_mistakes_are_usage_errors(argv, needle, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)
    assert exit_.value.code == 2 and needle in capsys.readouterr().err


def test_cli_reads_values_as_meant_version_and_debug(capsys):
    assert cli.main(["config", "vae", "--set", "learning_rate=1e-3", "--set", "beta_1=1E2"]) == 2  # unknown key
    capsys.readouterr()
    assert cli.main(["config", "vae", "--set", "learning_rate=1e-3"]) == 0
    assert "learning_rate: 0.001" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.strip() == f"vaezoo {vaezoo.__version__}"
    with pytest.raises(config.ConfigError):  # --debug: the traceback instead of one line
        cli.main(["config", "vae", "--set", "latent_dim=0", "--debug"])


def test_full_disk_leaves_nothing_half_written(tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    real_fsync = fileio._fsync_path

    def full(path):
        if path.name.startswith(fileio.PARTIAL_PREFIX) and path.name.endswith(".keras"):
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real_fsync(path)

    monkeypatch.setattr(fileio, "_fsync_path", full)
    assert cli.main(["train", "vae", *SMALL, "--epochs", "1", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "no space left on the device" in err and "rerun the same command" in err
    assert len(err.strip().splitlines()) == 1
    assert not list(out.rglob(f"{fileio.PARTIAL_PREFIX}*"))
    assert not (out / "checkpoints" / "epoch_0001.keras").exists() and not (out / "state.json").exists()


def test_offline_tfds_is_one_line(capsys, monkeypatch):
    import requests
    import tensorflow_datasets as tfds

    def offline(self, *args, **kwargs):
        raise requests.exceptions.ConnectionError("Failed to resolve 'storage.googleapis.com'")

    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", offline)
    assert cli.main(["train", "vae", "--dataset", "tfds:fashion_mnist", "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert "could not download or prepare 'fashion_mnist'" in err and "ConnectionError" in err and "--data-dir" in err


def test_export_defaults_to_exports_and_never_overwrites(tmp_path, vae_checkpoint, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = ["export", "vae", "--checkpoint", str(vae_checkpoint), "--format", "tflite"]
    assert cli.main(argv) == 0
    written = tmp_path / "exports" / "vae" / "vae.tflite"
    assert cli.main(argv) == 2 and "exists; pass overwrite=True (CLI: --overwrite)" in capsys.readouterr().err
    assert cli.main([*argv, "--overwrite"]) == 0 and written.is_file()
    saved = ["export", "vae", "--checkpoint", str(vae_checkpoint), "--format", "saved_model", "--version", "1"]
    assert cli.main(saved) == 0 and (tmp_path / "exports" / "vae" / "1" / "saved_model.pb").is_file()
    assert cli.main(saved) == 2 and "--overwrite" in capsys.readouterr().err
    assert cli.main([*saved, "--overwrite"]) == 0


# ---- inputs are checked where they enter ----------------------------------------------------------


def test_bad_inputs_are_refused_with_the_reason():
    model = tiny("vae")
    x = batch_for(model, n=8)
    with pytest.raises(ValueError, match=r"bernoulli likelihood models values in \[0, 1\].*\[0, 255\].*divide by 255"):
        model.elbo(x * 255.0)
    with pytest.raises(ValueError, match=r"inputs range over \[0, 2\]"):
        model.elbo(x * 2.0)
    bad = x.copy()
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="non-finite inputs"):
        model.encode(bad)
    model.compile(keras.optimizers.Adam(1e-3))
    with pytest.raises(ValueError, match="divide by 255"):  # fit checks the first batch, XLA or not
        model.fit(tf.data.Dataset.from_tensors(x * 255.0), epochs=1, verbose=0)
    with pytest.raises(ValueError, match="divide by 255"):
        model.fit(x * 255.0, epochs=1, batch_size=4, verbose=0)
    with pytest.raises(ValueError, match=r"sample.*|n must be an integer >= 0, got -1"):
        model.sample(-1)
    with pytest.raises(TypeError, match="n must be an integer >= 0, got 2.5"):
        model.sample(2.5)
    assert model.sample(0).shape[0] == 0
    with pytest.raises(ValueError, match=r"latent_dim=4 \(shape \(batch, 4\)\), got z of shape \(3, 8\)"):
        model.decode(np.zeros((3, 8), "float32"))
    gaussian = tiny("vae", likelihood="gaussian")  # any finite value is in its support
    assert np.isfinite(gaussian.elbo(x * 2.0).numpy()).all()


def test_get_name_sets_the_keras_name_and_the_checkpoint_knows_its_model(tmp_path):
    model = vaezoo.get("vae", name="my_vae", hidden_units=[8], latent_dim=2)
    assert model.name == "my_vae" and model.registry_name == "vae"
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert loaded.name == "my_vae" and loaded.registry_name == "vae"


# ---- honest console output ----------------------------------------------------------------------


def test_progress_counts_true_steps_and_no_shuffle_warning(recwarn):
    model = tiny("vae")
    ds = data.load("sprites", "train", batch_size=64, limit=320)  # 5 batches, 32 steps per execution
    ds = ds.map(lambda x: tf.image.resize(x, model.data_shape[:2]))
    seen = []

    class Steps(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            seen.append(batch)

    model.compile(keras.optimizers.Adam(1e-3), steps_per_execution=32)
    model.fit(ds, epochs=1, verbose=0, callbacks=[Steps()])
    assert seen == [4]  # one execution ran the 5 steps; Keras reported 31
    assert not [w for w in recwarn if "shuffle" in str(w.message)]


# ---- multi_worker waits can always be ended -------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _lonely_worker(tmp_path, *extra):
    cluster = {"cluster": {"worker": [f"127.0.0.1:{_free_port()}", f"127.0.0.1:{_free_port()}"]},
               "task": {"type": "worker", "index": 0}}
    env = {**_env(), "TF_CONFIG": json.dumps(cluster)}
    return subprocess.Popen([sys.executable, "-m", "vaezoo", "train", "vae", *SMALL, "--epochs", "1", "--strategy",
                             "multi_worker", "--out", str(tmp_path / "run"), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env), cluster


@pytest.mark.parametrize("signum", [signal.SIGTERM, pytest.param(signal.SIGINT, marks=pytest.mark.slow)])
def test_multi_worker_wait_ends_on_a_signal_naming_the_peers(tmp_path, signum):
    proc, cluster = _lonely_worker(tmp_path)
    for line in proc.stderr:  # the supervisor says when the wait for the peers starts
        if "waiting for the other workers to connect" in line:
            break
    time.sleep(1)
    start = time.monotonic()
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=30)
    assert time.monotonic() - start < 10
    assert proc.returncode == 128 + signum
    assert f"waiting for the other workers to connect (worker 1 at {cluster['cluster']['worker'][1]})" in err


@pytest.mark.slow
def test_multi_worker_timeout_is_a_clear_error(tmp_path):
    proc, cluster = _lonely_worker(tmp_path, "--timeout", "4")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert "timed out after 4 s waiting for the other workers" in err and cluster["cluster"]["worker"][1] in err
