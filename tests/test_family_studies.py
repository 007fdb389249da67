"""The studies of the new families on a tiny budget (benchmarks/full_vb.py, benchmarks/families.py,
benchmarks/inference_table.py, benchmarks/sampling_speed.py): they run, record what they measured, resume from
their results, and report the table."""

import json
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import full_vb  # noqa: E402
import families  # noqa: E402
import inference_table  # noqa: E402
import sampling_speed  # noqa: E402


def test_full_vb_study_runs_both_models_and_reports(tmp_path, data_dir, capsys):
    args = ["--steps", "20", "--block", "10", "--sizes", "50", "--eval-samples", "4", "--eval-examples", "50",
            "--curve-every", "1", "--curve-examples", "20", "--curve-samples", "2", "--out", str(tmp_path),
            "--data-dir", str(data_dir)]
    assert full_vb.main(args) == 0
    vae = json.loads((tmp_path / "vae_n50" / "result.json").read_text())
    bayes = json.loads((tmp_path / "bayesian_vae_n50" / "result.json").read_text())
    assert vae["train_examples"] == bayes["train_examples"] == 50 and vae["steps"] == bayes["steps"] == 20
    for key in ("test_nll", "train_nll", "test_nll_mean_weights", "test_bound", "test_weight_kl"):
        assert key in bayes, key
    assert bayes["train_examples_scored"] == 50  # the N images it trained on
    # the weight term of N = 50 images: KL(q || p) / N per image, large for so small a data set
    assert bayes["test_weight_kl"] > 10 and bayes["test_bound"] < -bayes["test_nll"]
    assert len(json.loads((tmp_path / "vae_n50" / "curve.json").read_text())["points"]) == 2
    capsys.readouterr()
    assert full_vb.main(args) == 0  # finished runs are read back, not trained again
    out = capsys.readouterr().out
    assert "| 50 |" in out and f"{vae['test_nll']:.2f}" in out
    assert json.loads((tmp_path / "summary.json").read_text())["bayesian_vae_n50"]["test_nll"] == bayes["test_nll"]


@pytest.mark.parametrize("group", ["mmd", "categorical", "sphere"])
def test_family_groups_measure_reconstruction_mmd_and_likelihood(tmp_path, data_dir, group):
    args = ["--group", group, "--steps", "10", "--block", "10", "--limit", "200", "--eval-samples", "4",
            "--eval-examples", "100", "--out", str(tmp_path), "--data-dir", str(data_dir)]
    runs = ["hyperspherical_vae_d10", "vae_d20"] if group == "sphere" else list(families.GROUPS[group][1])
    if group == "sphere":  # two of its six runs
        args = [*args, "--runs", *runs]
    assert families.main(args) == 0
    rows = {m: json.loads((tmp_path / m / "result.json").read_text()) for m in runs}
    assert all(r["reconstruction"] > 0 and (tmp_path / m / "samples.png").is_file() for m, r in rows.items())
    if group == "sphere":
        assert rows["hyperspherical_vae_d10"]["config"]["posterior"] == "von_mises_fisher"
        assert rows["vae_d20"]["model"] == "vae" and rows["vae_d20"]["config"]["latent_dim"] == 20
        assert "| hyperspherical_vae_d10 |" in (tmp_path / "summary.md").read_text()
        assert not (tmp_path / "vae_d5").exists()
        with pytest.raises(SystemExit, match="vae_d7.*its runs: vae_d5"):
            families.main([*args, "--runs", "vae_d7"])
        return
    if group == "categorical":
        assert "discrete_elbo" in rows["categorical_vae"]["test_metrics"] and rows["vae"]["config"]["latent_dim"] == 20
        assert rows["categorical_vae"]["config"]["kl_estimator"] == "discrete"
        assert rows["categorical_vae_relaxed"]["model"] == "categorical_vae"
        assert rows["categorical_vae_relaxed"]["config"]["kl_estimator"] == "relaxed"
        assert "(discrete ELBO)" in (tmp_path / "summary.md").read_text()
        return
    assert rows["wae_mmd"]["config"]["mmd_weight"] == 10.0 and rows["info_vae"]["config"]["kernel"] == "rbf"
    assert "| wae_mmd |" in (tmp_path / "summary.md").read_text()
    with pytest.raises(SystemExit):
        families.main([*args[:-4], "--steps", "20", "--out", str(tmp_path), "--data-dir", str(data_dir)])


@pytest.mark.slow  # a benchmark script end to end (44 s): CI runs it with the slow suite
def test_inference_table_trains_its_rows_with_their_settings_and_reports(tmp_path, data_dir, capsys):
    args = ["--runs", "vae", "vae_warmup", "vae_iaf", "iwae_2layer_k5", "--budget", "1", "--limit", "100", "--eval-samples", "3",
            "--out", str(tmp_path / "runs"), "--data-dir", str(data_dir)]
    assert inference_table.main(args) == 0
    iaf = json.loads((tmp_path / "runs" / "vae_iaf" / "result.json").read_text())
    assert iaf["settings"]["posterior"] == "iaf" and iaf["architecture"]["latent_dim"] == 50  # Burda's network
    two = json.loads((tmp_path / "runs" / "iwae_2layer_k5" / "result.json").read_text())
    assert two["model"] == "iwae_2layer" and two["k"] == 5 and two["paper_nll"] == 83.89
    assert "latent_dim" not in two["architecture"]  # its own two-layer architecture
    assert two["init_output_bias"] is True and "init_output_bias" not in iaf  # Burda et al.'s bias: two-layer rows
    warm = json.loads((tmp_path / "runs" / "vae_warmup" / "description.json").read_text())
    assert warm["kl_warmup_steps"] == 1  # 10% of the one step of 100 images, at least one step
    assert "kl_warmup_steps" not in iaf
    capsys.readouterr()
    assert inference_table.main([*args, "--report", "--docs", str(tmp_path / "docs")]) == 0
    table = (tmp_path / "docs" / "table.md").read_text()
    vae = json.loads((tmp_path / "runs" / "vae" / "result.json").read_text())["test_nll"]
    assert f"{iaf['test_nll']:.2f}" in table and f"{iaf['test_nll'] - vae:+.2f}" in table
    assert (tmp_path / "docs" / "vae_iaf" / "curve.png").is_file()
    summary = json.loads((tmp_path / "docs" / "summary.json").read_text())
    assert [r["run"] for r in summary["rows"]] == ["vae", "vae_warmup", "vae_iaf", "iwae_2layer_k5"]
    # A later session's machine has lost the runs: the published rows stay in the table beside the new ones.
    shutil.rmtree(tmp_path / "runs" / "vae_iaf")
    assert inference_table.main([*args, "--report", "--docs", str(tmp_path / "docs")]) == 0
    assert f"{iaf['test_nll']:.2f}" in (tmp_path / "docs" / "table.md").read_text()
    shutil.rmtree(tmp_path / "docs" / "vae_warmup")
    inference_table.main([*args, "--report", "--docs", str(tmp_path / "docs")])
    summary = json.loads((tmp_path / "docs" / "summary.json").read_text())
    assert [r["run"] for r in summary["rows"]] == ["vae", "vae_warmup", "vae_iaf", "iwae_2layer_k5"]  # copied again


def test_sampling_speed_measures_keras_and_tflite(capsys):
    assert sampling_speed.main(["--n", "4", "--repeats", "1", "--models", "vae_flow_prior", "vae_2layer"]) == 0
    out = capsys.readouterr().out
    assert "| vae_flow_prior |" in out and "| vae_2layer |" in out
    rows = json.loads(out.strip().splitlines()[-1])
    assert all(r["keras_samples_per_second"] > 0 and r["tflite_bytes"] > 0 for r in rows)
