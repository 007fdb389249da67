"""The reproduction harness (benchmarks/reproduce.py) on a tiny budget: schedule scaling, the curve,
resuming after a stop, early stopping on the validation split of the fixed binarization."""

import json
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import pretrained_zoo  # noqa: E402
import reproduce  # noqa: E402

import vaezoo  # noqa: E402
from vaezoo import cli, pretrained, runs, zoo  # noqa: E402

TINY = ["--limit", "200", "--batch-size", "50", "--curve-every", "1", "--curve-samples", "5", "--curve-examples",
        "40", "--eval-samples", "10", "--eval-examples", "40", "--jit-compile", "false"]


def test_the_paper_schedule_is_kept_in_full_and_scaled_to_a_budget():
    steps_per_epoch = 3000  # 60,000 images in batches of 20
    full = reproduce.paper_schedule(reproduce.PAPER_EPOCHS * steps_per_epoch)
    # Stage i lasts 3^i epochs: the rate changes after epochs 1, 4, 13, 40, 121, 364, 1093.
    assert full.boundaries == [e * steps_per_epoch for e in (1, 4, 13, 40, 121, 364, 1093)]
    np.testing.assert_allclose(full.values, [1e-3 * 10 ** (-i / 7) for i in range(8)])
    scaled = reproduce.paper_schedule(328 * 100)  # a budget of 328 epochs of 100 steps: a tenth of each stage
    assert scaled.boundaries == [10, 40, 130, 400, 1210, 3640, 10930]
    tiny = reproduce.paper_schedule(5)  # boundaries stay strictly increasing
    assert all(b < c for b, c in zip(tiny.boundaries, tiny.boundaries[1:]))


def test_a_run_writes_its_curve_and_resumes_after_a_stop(tmp_path, data_dir):
    out = tmp_path / "vae"
    argv = ["--model", "vae", "--dataset", "mnist", "--budget", "3", "--data-dir", str(data_dir), "--out", str(out),
            *TINY]
    # A time limit of ~0 s stops after the first epoch, as a kill after it would.
    assert reproduce.run(reproduce.parser().parse_args([*argv, "--time-limit", "1e-6"])) is None
    assert runs.read_state(out)["epochs_done"] == 1 and not (out / "result.json").exists()
    result = reproduce.run(reproduce.parser().parse_args(argv))  # the same command goes on
    assert [p["epoch"] for p in json.loads((out / "curve.json").read_text())["points"]] == [1, 2, 3]
    assert (out / "curve.png").stat().st_size > 1000
    assert runs.read_state(out)["epochs_done"] == 3
    assert [row["epoch"] for row in runs.read_history(out)] == [0, 1, 2]
    assert result["paper_nll"] == 86.76 and result["eval_samples"] == 10 and result["eval_examples"] == 40
    # Training helped and the final evaluation is the curve's model: the curve's NLL (5 samples, 40 images) falls
    # every epoch (measured 510 / 485 / 473 from ~543 untrained), and the final 10-sample NLL on the same 40
    # images is within a few nats of its last point (measured 472.3 vs 473.2) and well below the first epoch's loss.
    nll = [p["nll"] for p in json.loads((out / "curve.json").read_text())["points"]]
    first_loss = json.loads((out / "curve.json").read_text())["points"][0]["train_loss"]
    assert nll[0] > nll[1] > nll[2] and abs(result["test_nll"] - nll[2]) < 5, (nll, result["test_nll"])
    assert result["test_nll"] < first_loss - 40, (result["test_nll"], first_loss)
    assert reproduce.run(reproduce.parser().parse_args(argv)) == result  # finished: read back, not retrained
    # The run's model enters a zoo of pretrained weights; its manifest metric is the run's test NLL, by
    # a protocol that vaezoo.zoo.measure repeats exactly.
    zoo_dir = tmp_path / "zoo"
    pretrained_zoo.main(["--zoo", str(zoo_dir), "--data-dir", str(data_dir), "add-run", str(out), "--tag", "tiny"])
    entry = pretrained.manifest(zoo_dir)["vae.tiny"]
    assert entry.metric["value"] == result["test_nll"] and entry.default and entry.epochs == 3
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(pretrained.PRETRAINED_DIR_ENV, str(zoo_dir))
        model = vaezoo.get("vae.tiny", pretrained=True)
        assert zoo.measure(model, entry.metric, data_dir=data_dir) == pytest.approx(result["test_nll"], abs=1e-3)
    with pytest.raises(SystemExit, match="other settings.*budget: 3 -> 4"):
        reproduce.main([*argv[:5], "4", *argv[6:]])  # one line, no traceback


def test_fixed_binarization_stops_early_on_the_validation_split(tmp_path, data_dir):
    if not (Path(data_dir) / "binarized-mnist" / "binarized_mnist.npz").is_file():
        pytest.skip(f"binarized_mnist.npz not found under {data_dir}")
    out = tmp_path / "iwae"
    result = reproduce.run(reproduce.parser().parse_args(
        ["--model", "iwae", "--k", "2", "--dataset", "binarized_mnist", "--budget", "2", "--data-dir", str(data_dir),
         "--out", str(out), *TINY]))
    curve = json.loads((out / "curve.json").read_text())
    assert curve["split"] == "valid" and (out / "best.keras").is_file()
    best = min(curve["points"], key=lambda p: p["nll"])["epoch"]
    assert result["model_epoch"] == best and result["paper_nll"] is None


@pytest.mark.slow
def test_pretrained_zoo_ships_a_vq_vae_with_its_prior(tmp_path, data_dir, capsys):
    """``pretrained_zoo.py train vq_vae``: the VQ-VAE and the prior over its codes enter the zoo linked, each with
    a metric that ``measure`` repeats, and ``--pretrained`` sampling draws the codes from that prior."""
    zoo_dir = tmp_path / "zoo"
    pretrained_zoo.main(["--zoo", str(zoo_dir), "--data-dir", str(data_dir), "train", "vq_vae", "--runs",
                         str(tmp_path / "runs"), "--epochs", "1", "--limit", "64"])
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    entries = pretrained.manifest(zoo_dir)
    vq, prior = entries["vq_vae.mnist"], entries["pixelcnn_prior.mnist"]
    assert vq.prior == prior.key and prior.metric["codes_of"] == vq.key
    assert vq.metric["name"] == "test_reconstruction" and vq.metric["data"]["seed"] == reproduce.TEST_BINARIZATION_SEED
    assert report[prior.key]["bound"] == pytest.approx(vq.metric["value"] + prior.metric["value"], abs=2e-3)
    assert "--out runs/pretrained/pixelcnn_prior.mnist" in prior.command and str(tmp_path) not in prior.command
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(pretrained.PRETRAINED_DIR_ENV, str(zoo_dir))
        for entry in (vq, prior):
            model = vaezoo.get(entry.key, pretrained=True)
            assert zoo.measure(model, entry.metric, data_dir=data_dir) == pytest.approx(entry.metric["value"],
                                                                                              abs=1e-3)
        from vaezoo import cli

        out = tmp_path / "samples.png"
        assert cli.main(["sample", "vq_vae", "--pretrained", "--out", str(out), "--data-dir", str(data_dir)]) == 0
        assert out.stat().st_size > 1000
        assert "codes drawn from the prior pixelcnn_prior.mnist" in capsys.readouterr().out


def test_a_run_with_settings_records_them_and_enters_the_zoo_with_them(tmp_path, data_dir):
    out = tmp_path / "vamp"
    argv = ["--model", "vae", "--dataset", "mnist", "--budget", "1", "--data-dir", str(data_dir), "--out", str(out),
            "--set", "prior=vamp", "--set", "num_pseudo_inputs=7", *TINY]
    result = reproduce.run(reproduce.parser().parse_args(argv))
    assert result["settings"] == {"prior": "vamp", "num_pseudo_inputs": 7} and "prior=vamp" in result["title"]
    zoo_dir = tmp_path / "zoo"
    pretrained_zoo.main(["--zoo", str(zoo_dir), "--data-dir", str(data_dir), "add-run", str(out), "--tag", "tiny"])
    entry = pretrained.manifest(zoo_dir)["vae.tiny"]
    assert entry.config["prior"] == "vamp" and entry.config["num_pseudo_inputs"] == 7
    assert "--set prior=" in entry.command
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(pretrained.PRETRAINED_DIR_ENV, str(zoo_dir))
        model = vaezoo.get("vae.tiny", pretrained=True)
        assert model.prior == "vamp" and model.prior_layer.num_components == 7
    with pytest.raises(SystemExit, match="KEY=VALUE"):
        reproduce.settings(reproduce.parser().parse_args(["--set", "prior"]))


@pytest.mark.slow
def test_pretrained_zoo_train_takes_an_experiments_settings(tmp_path, data_dir, capsys):
    """``train vq_vae2 --set bottom_num_codes=4``: the change reaches the model, its prior and the recorded command."""
    zoo_dir = tmp_path / "zoo"
    pretrained_zoo.main(["--zoo", str(zoo_dir), "--data-dir", str(data_dir), "train", "vq_vae2", "--runs",
                         str(tmp_path / "runs"), "--epochs", "1", "--limit", "64", "--set", "bottom_num_codes=4"])
    entries = pretrained.manifest(zoo_dir)
    vq, prior = entries["vq_vae2.mnist"], entries["hierarchical_pixelcnn_prior.mnist"]
    assert vq.config["bottom_num_codes"] == 4 and prior.config["bottom_num_codes"] == 4
    assert "train vq_vae2 --set bottom_num_codes=4" in vq.command and "--set bottom_num_codes=4" in vq.command
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(pretrained.PRETRAINED_DIR_ENV, str(zoo_dir))
        assert vaezoo.get("vq_vae2", pretrained=True).bottom_quantizer.num_codes == 4


@pytest.mark.slow
def test_pretrained_zoo_ships_the_conditional_vae_measured_on_labelled_images(tmp_path, data_dir, capsys):
    """``train cvae``: its metric is -log p(x|y) on the labelled test images, and ``measure`` repeats it."""
    zoo_dir = tmp_path / "zoo"
    pretrained_zoo.main(["--zoo", str(zoo_dir), "--data-dir", str(data_dir), "train", "cvae", "--runs",
                         str(tmp_path / "runs"), "--epochs", "1", "--limit", "64"])
    entry = pretrained.manifest(zoo_dir)["cvae.mnist"]
    assert entry.metric["name"] == "test_nll" and entry.metric["data"]["labels"] is True
    assert entry.check["data"]["labels"] is True and entry.metric["value"] > 0  # an NLL of binary images
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(pretrained.PRETRAINED_DIR_ENV, str(zoo_dir))
        model = vaezoo.get("cvae", pretrained=True)
        assert zoo.measure(model, entry.metric, data_dir=data_dir) == pytest.approx(entry.metric["value"], abs=1e-3)
        # Without the labels a conditional model cannot be measured: refused, not silently unconditioned.
        wrong = {**entry.metric, "data": {k: v for k, v in entry.metric["data"].items() if k != "labels"}}
        with pytest.raises(ValueError):
            zoo.measure(model, wrong, data_dir=data_dir)
    # measure-run: a run measured with the entry's metric; the cvae's own run gives the entry's value, and a VAE
    # (the reference at the same budget) is measured on the same images without their labels.
    capsys.readouterr()
    pretrained_zoo.main(["--zoo", str(zoo_dir), "--data-dir", str(data_dir), "measure-run",
                         str(tmp_path / "runs" / "cvae.mnist"), "--like", "cvae.mnist"])
    own = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert own["metric"]["value"] == pytest.approx(entry.metric["value"], abs=1e-3)
    assert own["check"]["value"] == pytest.approx(entry.check["value"], abs=1e-3)
    assert cli.main(["train", "vae", "--dataset", "mnist", "--epochs", "1", "--limit", "64", "--seed", "0", "--out",
                     str(tmp_path / "vae"), "--verbose", "0", "--data-dir", str(data_dir)]) == 0
    pretrained_zoo.main(["--zoo", str(zoo_dir), "--data-dir", str(data_dir), "measure-run", str(tmp_path / "vae"),
                         "--like", "cvae.mnist", "--fields", "check"])
    reference = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    vae = keras.models.load_model(tmp_path / "vae" / runs.MODEL_FILE)
    unlabelled = {**entry.check, "data": {k: v for k, v in entry.check["data"].items() if k != "labels"}}
    assert reference["check"]["value"] == pytest.approx(zoo.measure(vae, unlabelled, data_dir=data_dir), abs=1e-3)
    assert "metric" not in reference and reference["check"]["cvae.mnist value"] == entry.check["value"]


@pytest.mark.slow
def test_semi_supervised_benchmark_runs_and_its_m2_enters_the_zoo(tmp_path, data_dir):
    """benchmarks/semi_supervised.py trains M2 on 100 labels and records the test error of q(y|x); ``add-m2`` ships
    that model with the error as its metric, and ``measure`` gives the same error again."""
    import semi_supervised

    out = tmp_path / "m2"
    argv = ["--epochs", "1", "--out", str(out), "--data-dir", str(data_dir), "--test-limit", "200", "--eval-samples",
            "5", "--eval-examples", "50", "--curve-every", "1", "--verbose", "0", "--set", "hidden_units=[16]",
            "--set", "classifier_units=[16]", "--set", "latent_dim=4"]
    assert semi_supervised.main(argv) == 0
    result = json.loads((out / "result.json").read_text())
    assert result["test_examples"] == 200 and 0.0 <= result["test_error"] <= 100.0 and result["paper_error"] == 11.97
    assert json.loads((out / "curve.json").read_text())["points"][-1]["test_error"] == result["test_error"]
    zoo_dir = tmp_path / "zoo"
    pretrained_zoo.main(["--zoo", str(zoo_dir), "--data-dir", str(data_dir), "add-m2", str(out), "--tag", "tiny"])
    entry = pretrained.manifest(zoo_dir)["m2.tiny"]
    assert entry.metric["name"] == "test_error" and entry.metric["value"] == result["test_error"]
    assert entry.config["hidden_units"] == [16] and "--set hidden_units=" in entry.command
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(pretrained.PRETRAINED_DIR_ENV, str(zoo_dir))
        model = vaezoo.get("m2.tiny", pretrained=True)
        assert zoo.measure(model, entry.metric, data_dir=data_dir) == pytest.approx(result["test_error"], abs=1e-3)
        assert zoo.measure(model, entry.check, data_dir=data_dir) == pytest.approx(entry.check["value"], abs=1e-3)
        with pytest.raises(ValueError, match="labelled data"):
            zoo.measure(model, {**entry.metric, "data": {**entry.metric["data"], "labels": False}}, data_dir=data_dir)
