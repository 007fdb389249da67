"""A user's own data: image folders, .npz/.npy files, arrays and tf.data datasets, with or without labels,
through ``vaezoo.data.load`` and ``vaezoo train --data`` (vaezoo.sources)."""

from __future__ import annotations

import shlex
from pathlib import Path
import keras
import numpy as np
import pytest
import tensorflow as tf
import yaml
from PIL import Image

import vaezoo
from vaezoo import cli, data, sources
from vaezoo.sources import DataError

from conftest import rgb_image_folder


def _batches(ds):
    """All the batches of ``ds`` as numpy: images, or (images, labels)."""
    parts = [tuple(np.asarray(t) for t in b) if isinstance(b, tuple) else (np.asarray(b),) for b in ds]
    return tuple(np.concatenate(col) for col in zip(*parts))


@pytest.fixture
def digits(data_dir, tmp_path):
    """120 MNIST training digits as PNG files in class sub-folders, and the same as an .npz."""
    x, y = data.mnist_arrays("train", data_dir)
    x = np.round(np.asarray(x[:120]) * 255).astype(np.uint8)
    y = np.asarray(y[:120])
    folder = tmp_path / "digits"
    for i, (image, label) in enumerate(zip(x, y)):
        (folder / f"class_{label}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(image[..., 0]).save(folder / f"class_{label}" / f"{i:04d}.png")
    np.savez(tmp_path / "digits.npz", x=x, y=y)
    return folder, tmp_path / "digits.npz", x, y


TINY = ["--set", "hidden_units=[16]", "--set", "latent_dim=2", "--epochs", "1", "--batch-size", "16",
        "--verbose", "0", "--seed", "0"]


# ---- reading ---------------------------------------------------------------------------------


def test_a_folder_with_class_subfolders_gives_images_labels_and_class_names(digits):
    folder, _, x, y = digits
    ds = data.load(folder, split="all", batch_size=50, labels=True, shuffle=False)
    images, labels = _batches(ds)
    assert ds.class_names == [f"class_{k}" for k in range(10)]  # sorted sub-folder names, as Keras does
    assert images.shape == (120, 28, 28, 1) and images.dtype == np.float32 and labels.dtype == np.int32
    # The folder's order is by class, then file name: match each example to the original by its file index.
    order = np.lexsort((np.arange(120), y))
    np.testing.assert_allclose(images, x[order] / 255.0, atol=1e-6)
    np.testing.assert_array_equal(labels, y[order])
    info = data.source_info(folder)
    assert info == {"user": True, "image_shape": [28, 28, 1], "binary": False, "num_examples": 120,
                    "num_classes": 10, "class_names": [f"class_{k}" for k in range(10)]}


def test_user_data_splits_are_disjoint_fixed_and_cover_everything(digits):
    _, npz, x, _ = digits
    parts = {s: _batches(data.load(npz, split=s, batch_size=64, shuffle=False))[0] for s in ("train", "validation")}
    assert len(parts["train"]) == 108 and len(parts["validation"]) == 12  # validation_split 0.1
    again = _batches(data.load(npz, split="validation", batch_size=7, shuffle=False))[0]
    np.testing.assert_array_equal(again, parts["validation"])  # the same held-out images every time
    every = np.concatenate([parts["train"], parts["validation"]]).reshape(120, -1)
    assert len({row.tobytes() for row in every}) == len({row.tobytes() for row in (x / 255.0).astype("float32")
                                                                .reshape(120, -1)})
    quarter = _batches(data.load(npz, split="validation", batch_size=64, validation_split=0.25, shuffle=False))[0]
    assert len(quarter) == 30
    assert data.load(npz, split="valid", batch_size=64).element_spec.shape[1:] == (28, 28, 1)
    with pytest.raises(ValueError, match="split 'tset'.*train, validation, valid, test, all"):
        data.load(npz, split="tset")


def test_limit_is_a_fixed_random_subset_not_the_first_examples():
    x = np.arange(200, dtype=np.uint8).reshape(200, 1, 1, 1).repeat(2, axis=1)  # each image holds its index
    first = _batches(data.load(x, split="all", batch_size=100, limit=20, shuffle=False))[0][:, 0, 0, 0] * 255
    second = _batches(data.load(x, split="all", batch_size=100, limit=20, shuffle=False, seed=5))[0][:, 0, 0, 0] * 255
    np.testing.assert_array_equal(first, second)  # the same subset whatever the seed
    assert len(set(first.round().astype(int))) == 20 and first.max() > 50  # not images 0..19
    np.testing.assert_array_equal(data.subset(200, 20), data.subset(200, 20))
    np.testing.assert_array_equal(data.subset(30, None), np.arange(30))


def test_arrays_tuples_npy_and_tf_data_sources(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.random((40, 6, 6, 1)).astype("float32")
    y = np.arange(40) % 4
    images, labels = _batches(data.load((x, y), split="all", batch_size=16, labels=True, shuffle=False))
    np.testing.assert_allclose(images, x)
    np.testing.assert_array_equal(labels, y)
    u8 = (x * 255).astype(np.uint8)
    np.save(tmp_path / "x.npy", u8)
    from_npy = _batches(data.load(tmp_path / "x.npy", split="all", batch_size=40, shuffle=False))[0]
    np.testing.assert_allclose(from_npy, u8 / 255, atol=1e-6)
    stream = tf.data.Dataset.from_tensor_slices({"image": u8[..., 0], "label": y})
    streamed, stream_labels = _batches(data.load(stream, split="all", batch_size=8, labels=True, shuffle=False))
    assert streamed.shape == (40, 6, 6, 1)  # rank-2 images get their channel
    np.testing.assert_allclose(streamed, u8 / 255, atol=1e-6)
    np.testing.assert_array_equal(stream_labels, y)
    names = _batches(data.load((x, np.array(["cat", "dog"] * 20)), split="all", batch_size=40, labels=True,
                               shuffle=False))[1]
    np.testing.assert_array_equal(names, [0, 1] * 20)  # string labels: indices into the sorted class names


def test_image_size_and_color_mode_convert(tmp_path):
    folder = rgb_image_folder(tmp_path / "rgb", n=6, size=40)
    x = _batches(data.load(folder, split="all", batch_size=6, image_size=(16, 24), shuffle=False))[0]
    assert x.shape == (6, 16, 24, 3)
    grey = _batches(data.load(folder, split="all", batch_size=6, color_mode="grayscale", shuffle=False))[0]
    rgb = _batches(data.load(folder, split="all", batch_size=6, shuffle=False))[0]
    assert grey.shape == (6, 40, 40, 1)
    np.testing.assert_allclose(grey[..., 0], rgb @ np.array([0.299, 0.587, 0.114]), atol=2 / 255)  # ITU-R 601
    assert data.load(grey[:, :, :, :1], split="all", color_mode="rgb").element_spec.shape[-1] == 3


def test_registered_sets_carry_labels_when_asked(data_dir):
    ds = data.load("mnist", split="test", batch_size=32, labels=True, limit=64)
    x, y = next(iter(ds))
    assert x.shape == (32, 28, 28, 1) and y.dtype == tf.int32 and ds.class_names == [str(k) for k in range(10)]
    sprites = data.load("sprites", split="test", batch_size=16, labels=True)
    assert sprites.class_names == list(data.SPRITE_SHAPES) and next(iter(sprites))[1].shape == (16,)
    with pytest.raises(DataError, match="'binarized_mnist' has no labels"):
        data.load("binarized_mnist", labels=True, data_dir=data_dir)


def test_unconditional_models_ignore_labels_and_refuse_sample_weights():
    model = vaezoo.get("vae", hidden_units=[8], latent_dim=2, data_shape=[6, 6, 1])
    model.compile(keras.optimizers.Adam(1e-3), jit_compile=False, steps_per_execution=1)
    x = (np.random.default_rng(0).random((32, 6, 6, 1)) > 0.5).astype("float32")
    y = np.arange(32) % 3
    start = model.seed_generator.state.numpy()
    with_labels = model.evaluate(x, y, batch_size=32, return_dict=True, verbose=0)
    model.seed_generator.state.assign(start)  # the same noise draws again
    without = model.evaluate(x, batch_size=32, return_dict=True, verbose=0)
    assert with_labels["loss"] == pytest.approx(without["loss"], rel=1e-5)
    with pytest.raises(ValueError, match="does not weight examples"):
        model.fit(x, y, sample_weight=np.ones(32), batch_size=16, epochs=1, verbose=0)


# ---- bad input: one clear error ----------------------------------------------------------------


def test_bad_folders_and_files_name_the_problem(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty.*holds no images"):
        data.load(tmp_path / "empty")
    folder = rgb_image_folder(tmp_path / "imgs", n=4, size=16)
    (folder / "red" / "broken.png").write_bytes((folder / "red" / "000.png").read_bytes()[:40])  # truncated
    with pytest.raises(DataError, match="broken.png"):
        data.load(folder)
    (folder / "red" / "broken.png").unlink()
    Image.fromarray(np.zeros((20, 16, 3), np.uint8)).save(folder / "blue" / "tall.png")
    with pytest.raises(DataError, match=r"sizes.*tall\.png.*image_size"):
        data.load(folder)
    assert data.load(folder, image_size=16, split="all", batch_size=8).element_spec.shape[1:] == (16, 16, 3)
    np.savez(tmp_path / "nox.npz", images=np.zeros((4, 8, 8, 1)))
    with pytest.raises(DataError, match=r"no array 'x'.*images"):
        data.load(tmp_path / "nox.npz")
    with pytest.raises(DataError, match="3 labels for 4 images"):
        data.load((np.zeros((4, 8, 8, 1), np.float32), np.arange(3)), labels=True)
    with pytest.raises(DataError, match=r"floats in \[200, 200\].*divide by 255"):
        data.load(np.full((4, 8, 8, 1), 200.0, np.float32))
    with pytest.raises(DataError, match="No such file or folder: '.*nothere'"):
        data.load(str(tmp_path / "nothere"))
    with pytest.raises(ValueError, match=r"Unknown dataset 'mnsit'. Did you mean 'mnist'.*a folder of images"):
        data.load("mnsit")


def test_cli_refuses_bad_sources_in_one_line(tmp_path, capsys):
    assert cli.main(["config", "vae", "--data", "mnsit"]) == 2
    err = capsys.readouterr().err
    assert "Did you mean 'mnist'" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    (tmp_path / "empty").mkdir()
    assert cli.main(["train", "vae", "--data", str(tmp_path / "empty"), "--out", str(tmp_path / "run"), *TINY]) == 2
    err = capsys.readouterr().err
    assert "holds no images" in err and "Traceback" not in err
    with pytest.raises(SystemExit):  # argparse refuses, naming the valid range
        cli.main(["train", "vae", "--data", "x", "--validation-split", "1.5", *TINY])
    assert "--validation-split: must be a number > 0 and < 1, got 1.5" in capsys.readouterr().err


# ---- end to end: vaezoo train --data ------------------------------------------------------------


def test_cli_trains_on_a_folder_and_an_npz(digits, tmp_path, capsys):
    folder, npz, _, _ = digits
    for source, run in ((folder, "from_folder"), (npz, "from_npz")):
        out = tmp_path / run
        assert cli.main(["train", "vae", "--data", str(source), "--out", str(out), *TINY]) == 0
        printed = capsys.readouterr().out
        assert "120 images of (28, 28, 1), continuous values, 10 classes" in printed
        cfg = yaml.safe_load((out / "config.yaml").read_text())
        assert cfg["likelihood"] == "gaussian_learned_scale" and cfg["binarize"] == "none"  # inferred, recorded
        model = keras.models.load_model(out / "model.keras")
        assert tuple(model.data_shape) == (28, 28, 1)
        assert (out / "samples.png").is_file() and (out / "samples_reconstructions.png").is_file()
    out = tmp_path / "bernoulli"  # what the user sets wins over what is inferred
    assert cli.main(["train", "vae", "--data", str(npz), "--out", str(out), "--set", "likelihood=bernoulli",
                     *TINY]) == 0
    assert "likelihood: bernoulli" in (out / "config.yaml").read_text()


def test_cli_trains_a_conv_vae_on_a_64x64_rgb_folder(tmp_path, capsys):
    folder = rgb_image_folder(tmp_path / "rgb")
    out = tmp_path / "run"
    argv = ["train", "vae_conv", "--data", str(folder), "--out", str(out), "--set", "conv_filters=[4, 8]",
            "--set", "hidden_units=[16]", "--set", "latent_dim=2", "--epochs", "1", "--batch-size", "8",
            "--verbose", "0", "--seed", "0"]
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    assert "data_shape (28, 28, 1) -> (64, 64, 3)" in printed and "2 classes" in printed
    model = keras.models.load_model(out / "model.keras")
    assert tuple(model.data_shape) == (64, 64, 3) and model.likelihood == "gaussian_learned_scale"
    assert np.asarray(model.sample(2, seed=0)).shape == (2, 64, 64, 3)
    with Image.open(out / "samples.png") as grid:
        assert grid.mode == "RGB"
    assert cli.main(argv) == 0  # the same command again: the finished run is left alone
    assert "nothing to do" in capsys.readouterr().out


def test_config_accepts_sources_and_refuses_unknown_names(tmp_path):
    assert vaezoo.get_config("vae", dataset=str(tmp_path))["dataset"] == str(tmp_path)
    assert vaezoo.get_config("vae", dataset="tfds:fashion_mnist", image_size=[32, 32], color_mode="rgb")
    with pytest.raises(vaezoo.ConfigError, match=r"'dataset'.*got 'sprits'.*Did you mean 'sprites'"):
        vaezoo.get_config("vae", dataset="sprits")
    with pytest.raises(vaezoo.ConfigError, match="'color_mode'.*grayscale, rgb, None, got 'rgba'"):
        vaezoo.get_config("vae", color_mode="rgba")
    assert sources.validation_split_name("binarized_mnist") == "valid"
    assert sources.validation_split_name(str(tmp_path)) == "validation"


def test_the_readme_own_images_commands_run_as_pasted(tmp_path, monkeypatch, capsys):
    """The bash block of the README's "Train on your own images", on a generated folder (epochs shortened)."""
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = text[text.index("## Train on your own images"):]
    block = section[section.index("```bash\n") + 8:section.index("```", section.index("```bash\n") + 8)]
    commands = [shlex.split(line) for line in block.splitlines() if line.startswith("vaezoo ")]
    assert [c[:2] for c in commands] == [["vaezoo", "train"], ["vaezoo", "sample"]]
    monkeypatch.chdir(tmp_path)
    rgb_image_folder(tmp_path / "my_images")
    for argv in commands:
        argv = [("1" if previous == "--epochs" else a) for previous, a in zip(["", *argv], argv)]
        assert cli.main([*argv[1:], *(["--verbose", "0"] if argv[1] == "train" else [])]) == 0, argv
    printed = capsys.readouterr().out
    assert "data_shape (28, 28, 1) -> (64, 64, 3)" in printed
    assert (tmp_path / "mine.png").is_file() and (tmp_path / "mine_reconstructions.png").is_file()


def _indexed_arrays(n=60, classes=3):
    """Images whose pixels hold their own index (uint8), labels index % classes, and a test part."""
    x = np.repeat(np.arange(n, dtype=np.uint8), 16).reshape(n, 4, 4, 1)
    return {"x": x, "y": np.arange(n) % classes, "x_test": x[:6], "y_test": np.arange(6) % classes}


def test_semi_supervised_batches_mix_a_balanced_labelled_set_with_the_rest():
    arrays = _indexed_arrays()
    ds = data.semi_supervised(arrays, num_labels=6, batch_size=10, labeled_batch_size=4, binarize="none", seed=1)
    seen_unlabelled, seen_labelled = [], []
    for x, y in ds:
        index = np.round(x.numpy()[:, 0, 0, 0] * 255).astype(int)
        y = y.numpy()
        assert (y[:-4] == data.UNLABELED).all() and (y[-4:] >= 0).all()  # unlabelled first, then 4 labelled
        np.testing.assert_array_equal(y[-4:], index[-4:] % 3)  # the true labels of the labelled examples
        seen_unlabelled += index[:-4].tolist()
        seen_labelled += index[-4:].tolist()
    # Six labelled examples, two of each class, cycled (4 per batch); every other training example once.
    labelled = set(seen_labelled)
    assert len(labelled) == 6 and sorted(np.bincount(np.array(sorted(labelled)) % 3)) == [2, 2, 2]
    train = set(seen_unlabelled) | labelled
    assert len(seen_unlabelled) == len(set(seen_unlabelled)) == len(train) - 6 and not labelled & set(seen_unlabelled)
    assert len(seen_labelled) == 4 * -(-len(seen_unlabelled) // 10)  # one labelled part per batch
    fixed = ds.labelled_indices
    again = data.semi_supervised(arrays, num_labels=6, batch_size=10, labeled_batch_size=4, binarize="none", seed=2)
    np.testing.assert_array_equal(again.labelled_indices, fixed)  # fixed by label_seed, not by the shuffling seed
    other = data.semi_supervised(arrays, num_labels=6, batch_size=10, binarize="none", label_seed=5)
    assert set(other.labelled_indices.tolist()) != set(fixed.tolist())


def test_semi_supervised_errors_name_the_problem():
    arrays = _indexed_arrays()
    with pytest.raises(ValueError, match="num_labels=7 must be a multiple of the 3 classes"):
        data.semi_supervised(arrays, num_labels=7)
    with pytest.raises(data.DataError, match="fewer than the 30 labels per class"):
        data.semi_supervised(arrays, num_labels=90)
    with pytest.raises(data.DataError, match="has no labels"):
        data.semi_supervised({"x": arrays["x"]}, num_labels=3)
    with pytest.raises(ValueError, match="num_labels must be an integer >= 1, got 0"):
        data.semi_supervised(arrays, num_labels=0)
