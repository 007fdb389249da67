"""The CLI (train, evaluate, sample, list, config) and resuming an interrupted fit."""

import csv

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from vaezoo import cli, training

from conftest import batch_for, tiny

TINY = ["--set", "hidden_units=[16]", "--set", "conv_filters=[4, 4, 4]", "--set", "latent_dim=2"]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """One tiny end-to-end `vaezoo train` on the embedded sprites (shared by the CLI tests)."""
    out = tmp_path_factory.mktemp("run")
    code = cli.main(["train", "beta_vae_conv", *TINY, "--epochs", "2", "--limit", "256", "--batch-size", "64",
                     "--out", str(out), "--seed", "0", "--verbose", "0"])
    assert code == 0
    return out


def test_train_writes_model_samples_logs_and_checkpoint(trained_run):
    for name in ("model.keras", "checkpoints/last.keras", "samples.png", "samples_reconstructions.png",
                 "samples_manifold.png", "samples_codes.png", "config.yaml", "history.csv"):
        assert (trained_run / name).is_file(), name
    assert any((trained_run / "logs").rglob("*tfevents*")), "no TensorBoard events"
    with open(trained_run / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 and {"loss", "elbo", "kl", "reconstruction", "val_elbo"} <= set(rows[0])
    grid = np.asarray(Image.open(trained_run / "samples.png"))
    assert grid.ndim == 2 and grid.shape[0] > 100 and grid.std() > 0
    model = keras.models.load_model(trained_run / "model.keras")
    assert model.latent_dim == 2 and model.data_shape == (32, 32, 1)


def test_train_infers_data_shape_from_dataset(tmp_path, capsys):
    # vae's config is for 28x28 MNIST; on 32x32 sprites the CLI adapts data_shape.
    code = cli.main(["train", "vae", *TINY[:2], "--dataset", "sprites", "--binarize", "none", "--epochs", "1",
                     "--limit", "64", "--out", str(tmp_path), "--verbose", "0"])
    assert code == 0
    assert "data_shape (28, 28, 1) -> (32, 32, 1)" in capsys.readouterr().out
    assert keras.models.load_model(tmp_path / "model.keras").data_shape == (32, 32, 1)


def test_evaluate_prints_elbo_parts(trained_run, capsys):
    code = cli.main(["evaluate", "beta_vae_conv", "--checkpoint", str(trained_run / "model.keras"),
                     "--limit", "128", "--verbose", "0"])
    assert code == 0
    out = capsys.readouterr().out
    values = {line.split(":")[0].strip(): float(line.split(":")[1]) for line in out.splitlines()[1:]}
    assert set(values) == {"loss", "elbo", "reconstruction", "kl"}
    assert values["elbo"] == pytest.approx(-(values["reconstruction"] + values["kl"]), rel=1e-4)


def test_sample_writes_grids(trained_run, tmp_path):
    out = tmp_path / "grid.png"
    assert cli.main(["sample", "beta_vae_conv", "--checkpoint", str(trained_run / "model.keras"), "--out", str(out),
                     "--seed", "1"]) == 0
    assert out.is_file() and (tmp_path / "grid_reconstructions.png").is_file()
    # A 2-D latent: the decoded lattice (15 x 15 tiles of 32 + 1 pixels, upscaled 2x), and the codes by class.
    manifold = np.asarray(Image.open(tmp_path / "grid_manifold.png"))
    assert manifold.shape[:2] == (2 * (15 * 33 + 1),) * 2 and manifold.std() > 0
    codes = np.asarray(Image.open(tmp_path / "grid_codes.png"))
    assert codes.ndim == 3 and {tuple(c) for c in codes.reshape(-1, 3)} > {(255, 255, 255)}
    first = np.asarray(Image.open(out))
    cli.main(["sample", "beta_vae_conv", "--checkpoint", str(trained_run / "model.keras"), "--out", str(out),
              "--seed", "1"])
    np.testing.assert_array_equal(first, np.asarray(Image.open(out)))  # seeded


def test_list_and_config(capsys):
    assert cli.main(["list", "beta_vae*"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["name", "family", "package"]
    assert [line.split()[0] for line in out[1:]] == ["beta_vae", "beta_vae_conv", "beta_vae_conv64"]
    assert cli.main(["config", "beta_vae", "--set", "beta=2"]) == 0
    assert "beta: 2.0" in capsys.readouterr().out


@pytest.mark.parametrize("argv,needle", [
    (["train", "beta_vea"], "Did you mean 'beta_vae'"),
    (["train", "vae", "--set", "latnt_dim=3"], "Unknown config key 'latnt_dim'"),
    (["train", "vae", "--set", "latent_dim=abc"], "must be int"),
    (["train", "vae", "--dataset", "cifar"], "Config key 'dataset' of model 'vae' must be mnist, binarized_mnist"),
    (["evaluate", "vae", "--checkpoint", "/no/such.keras", "--dataset", "sprites"], "does not exist"),
    (["train", "vae", "--data-dir", "/no/such/dir"], "/no/such/dir/train-images-idx3-ubyte.gz"),
])
def test_cli_errors_are_clear(argv, needle, capsys):
    assert cli.main(argv) == 2
    assert needle in capsys.readouterr().err


def test_interrupted_fit_resumes_where_it_stopped(tmp_path):
    model = tiny("vae")
    x = batch_for(model, n=16)
    ds = tf.data.Dataset.from_tensors(x).repeat(3)  # 3 steps per epoch

    class Interrupt(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                raise KeyboardInterrupt

    model.compile(keras.optimizers.Adam(1e-3))
    with pytest.raises(KeyboardInterrupt):
        model.fit(ds, epochs=4, verbose=0, callbacks=training.standard_callbacks(tmp_path) + [Interrupt()])
    weights_at_interrupt = [w.numpy() for w in model.weights]

    class StartingWeights(keras.callbacks.Callback):  # runs after BackupAndRestore has restored
        def on_train_begin(self, logs=None):
            self.weights = [w.numpy() for w in self.model.weights]

    fresh = tiny("vae")  # a new process would start from scratch
    fresh.compile(keras.optimizers.Adam(1e-3))
    start = StartingWeights()
    history = fresh.fit(ds, epochs=4, verbose=0, callbacks=training.standard_callbacks(tmp_path) + [start])
    assert history.epoch == [2, 3]  # epochs 0 and 1 were not run again
    for restored, saved in zip(start.weights, weights_at_interrupt):
        np.testing.assert_array_equal(restored, saved)
    assert int(fresh.optimizer.iterations) == 12
    resumed = keras.models.load_model(tmp_path / "checkpoints" / "last.keras")
    assert int(resumed.optimizer.iterations) == 12
    assert any(not np.array_equal(a, b.numpy()) for a, b in zip(weights_at_interrupt, fresh.weights))  # trained on


def test_train_and_evaluate_a_discrete_latent_model(tmp_path, capsys, data_dir):
    assert cli.main(["train", "vq_vae", "--set", "hidden_channels=8", "--set", "residual_channels=4", "--epochs", "1",
                     "--limit", "128", "--data-dir", str(data_dir), "--out", str(tmp_path), "--verbose", "0"]) == 0
    assert (tmp_path / "samples.png").is_file() and (tmp_path / "samples_reconstructions.png").is_file()
    ckpt = str(tmp_path / "model.keras")
    assert cli.main(["evaluate", "vq_vae", "--checkpoint", ckpt, "--data-dir", str(data_dir), "--limit", "100",
                     "--verbose", "0"]) == 0
    assert "perplexity" in capsys.readouterr().out
    assert cli.main(["evaluate", "vq_vae", "--checkpoint", ckpt, "--data-dir", str(data_dir), "--limit", "100",
                     "--num-samples", "10"]) == 2
    assert "discrete codes" in capsys.readouterr().err


def test_traversal_grid_sweeps_one_latent_per_row(trained_run, tmp_path):
    assert (trained_run / "samples_traversal.png").is_file()  # train writes it too
    model = keras.models.load_model(trained_run / "model.keras")
    x = batch_for(model, n=1)
    grid = model.traverse(x, steps=5)
    assert grid.shape == (2, 5, 32, 32, 1)  # latent_dim rows, 5 values from -3 to 3
    mean, _ = model.encode(x)
    # Row i, column j decodes the posterior mean with z_i = linspace(-3, 3, 5)[j].
    z = np.repeat(np.asarray(mean), 5, axis=0)
    z[:, 1] = np.linspace(-3, 3, 5)
    np.testing.assert_allclose(grid[1], np.asarray(model.decode(z)), atol=1e-6)
    assert not np.allclose(grid[1, 0], grid[1, -1])  # the sweep changes the picture
    out = tmp_path / "g.png"
    assert cli.main(["sample", "beta_vae_conv", "--checkpoint", str(trained_run / "model.keras"), "--out", str(out),
                     "--traverse"]) == 0
    picture = np.asarray(Image.open(tmp_path / "g_traversal.png"))
    assert picture.shape == (2 * (2 * 33 + 1), 2 * (9 * 33 + 1))  # 2 rows x 9 columns of 32x32, padded, x2


def test_tensorboard_gets_images_every_epoch(trained_run):
    tags = {}
    for path in (trained_run / "logs" / "images").glob("*tfevents*"):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                tags.setdefault(value.tag, set()).add(event.step)
    # The trained run has a 2-D latent (the manifold grid) and labelled sprites (the code scatter).
    assert tags == {"samples": {0, 1}, "reconstructions": {0, 1}, "manifold": {0, 1}, "codes": {0, 1}}


def test_train_init_output_bias_is_recorded_and_refused_where_it_cannot_apply(tmp_path, capsys, monkeypatch):
    seen = []
    original = training.init_output_bias
    monkeypatch.setattr(training, "init_output_bias", lambda model, data: seen.append(original(model, data)))
    argv = ["train", "beta_vae_conv", *TINY, "--epochs", "1", "--limit", "64", "--batch-size", "32",
            "--out", str(tmp_path / "run"), "--seed", "0", "--verbose", "0", "--init-output-bias"]
    assert cli.main(argv) == 0
    assert len(seen) == 1 and seen[0].shape == (1,)  # the conv decoder: one bias for the one channel
    import json
    state = json.loads((tmp_path / "run" / "state.json").read_text())
    assert state["args"]["init_output_bias"] is True
    # Resuming without the flag is another run: refused, naming the difference.
    assert cli.main([*argv[:-1], "--epochs", "2"]) == 2
    assert "init_output_bias" in capsys.readouterr().err
    assert cli.main(["train", "beta_vae_conv", "--pretrained", "--init-output-bias", "--out", str(tmp_path / "p")]) == 2
    assert "does not combine with pretrained= (--pretrained)" in capsys.readouterr().err
    assert cli.main(["train", "vae", "--dataset", "sprites", "--set", "likelihood=continuous_bernoulli",
                     "--init-output-bias", "--epochs", "1", "--limit", "32", "--out", str(tmp_path / "cb")]) == 2
    assert "--init-output-bias" in capsys.readouterr().err


def test_help_needs_no_tensorflow_and_commands_print_no_startup_noise():
    # `vaezoo --help` and a command's --help are answered by the parser alone (issue 29): no TensorFlow import.
    import subprocess
    import sys

    for argv in (["--help"], ["train", "--help"], ["--version"]):
        done = subprocess.run([sys.executable, "-X", "importtime", "-m", "vaezoo", *argv], capture_output=True,
                              text=True)
        assert done.returncode == 0 and ("usage: vaezoo" in done.stdout or "vaezoo 0" in done.stdout), done.stderr
        imported = [line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if "|" in line]
        assert "vaezoo.cli.parser" in imported and not any(m.startswith(("tensorflow", "keras")) for m in imported)
    # A real command imports everything, and TensorFlow's C++ start-up lines (oneDNN, CUDA, cuInit) stay out.
    done = subprocess.run([sys.executable, "-m", "vaezoo", "config", "vae"], capture_output=True, text=True)
    assert done.returncode == 0 and "latent_dim:" in done.stdout and done.stderr == "", done.stderr
