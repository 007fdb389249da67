"""benchmarks/disentanglement.py on a tiny budget: runs train, stop at the time limit, resume,
refuse other settings, get scored, and the report summarises them over seeds."""

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import disentanglement as study  # noqa: E402

TINY = ["--tiny", "--steps", "8", "--chunk", "4", "--limit", "640", "--metric-examples", "200", "--score-points", "10",
        "--eval-examples", "200"]


def test_every_study_model_is_built_with_the_same_architecture():
    for name in study.STUDY:
        model = study.build(name, steps=300, seed=0)
        assert model.data_shape == (64, 64, 1) and model.latent_dim == 10
        assert model.conv_filters == (32, 32, 64, 64) and model.hidden_units == (256,)
    assert study.overrides("annealed_vae", 300)[1]["capacity_steps"] == 100  # C reaches C_max after a third


@pytest.mark.slow  # the study script end to end (34 s): CI runs it with the slow suite
def test_study_runs_resume_and_report(tmp_path, capsys):
    out = tmp_path / "study"
    args = [*TINY, "--models", "vae", "--seeds", "0", "1", "--out", str(out)]
    assert study.main([*args, "--time-limit", "0"]) == 0  # stops after the first chunk of the first run
    assert "stopped at the time limit" in capsys.readouterr().out
    state = json.loads((out / "vae" / "seed0" / "state.json").read_text())
    assert state["epochs_done"] == 1 and not (out / "vae" / "seed0" / "result.json").exists()

    assert study.main(args) == 0  # resumes, then the other runs
    table = capsys.readouterr().out
    result = json.loads((out / "vae" / "seed0" / "result.json").read_text())
    assert json.loads((out / "vae" / "seed0" / "state.json").read_text())["epochs_done"] == 2
    assert set(result["metrics"]) >= {"mig", "sap", "dci_disentanglement", "modularity", "beta_vae_score",
                                      "factor_vae_score"}
    assert all(0.0 <= v <= 1.0 for v in result["metrics"].values())
    assert np.isfinite(result["test"]["reconstruction"]) and (out / "vae" / "seed0" / "traversal.png").is_file()
    summary = json.loads((out / "summary.json").read_text())
    assert list(summary) == ["vae"] and summary["vae"]["seeds"] == [0, 1]
    mig = [json.loads((out / "vae" / f"seed{s}" / "result.json").read_text())["metrics"]["mig"] for s in (0, 1)]
    assert summary["vae"]["mig"] == {"median": pytest.approx(np.median(mig)), "min": min(mig), "max": max(mig)}
    assert "| vae | 2 |" in table

    with pytest.raises(SystemExit, match="holds a run with other settings"):
        study.main([*args[:2], "16", *args[3:]])  # --steps 16 into the same folder


@pytest.mark.slow
def test_other_scoring_settings_rescore_a_finished_run_without_training_it_again(tmp_path):
    out = tmp_path / "study"
    args = [*TINY, "--models", "vae", "--seeds", "0", "--out", str(out)]
    assert study.main(args) == 0
    folder = out / "vae" / "seed0"
    first = json.loads((folder / "result.json").read_text())
    checkpoint = (folder / "checkpoints" / "last.keras").stat().st_mtime_ns
    more = [*args]
    more[more.index("--metric-examples") + 1] = "300"
    assert study.main(more) == 0
    second = json.loads((folder / "result.json").read_text())
    assert first["scoring"]["metric_examples"] == 200 and second["scoring"]["metric_examples"] == 300
    assert second["test"]["kl"] == first["test"]["kl"]  # the same trained weights (closed-form KL), scored again
    assert second["test"]["reconstruction"] == pytest.approx(first["test"]["reconstruction"], rel=0.01)  # sampled z
    assert (folder / "checkpoints" / "last.keras").stat().st_mtime_ns == checkpoint  # not trained again
    assert json.loads((folder / "state.json").read_text())["epochs_done"] == 2

    record = tmp_path / "record"  # what gets committed: the small files, no checkpoints
    assert study.main([*more, "--collect", str(record)]) == 0
    assert sorted(p.name for p in (record / "vae" / "seed0").iterdir()) == sorted(study.RECORD_FILES)
    assert study.report(record) == study.report(out)
    row = next(line for line in study.markdown(study.report(record)).splitlines() if line.startswith("| vae |"))
    assert row.startswith("| vae | 1 |") and "(" not in row  # one seed: its value, no range
    assert study.main([*more[:-1], str(record)]) == 0  # a later session going on from the record: read back
    assert not (record / "vae" / "seed0" / "checkpoints").exists()


def test_report_compares_each_model_with_the_vae_at_the_same_seed(tmp_path):
    def record(name, seed, mig, dci):
        folder = tmp_path / name / f"seed{seed}"
        folder.mkdir(parents=True)
        result = {"study": name, "seed": seed, "steps": 10, "test": {"reconstruction": 1.0, "kl": 1.0},
                  "metrics": {"mig": mig, "dci_disentanglement": dci}}
        (folder / "result.json").write_text(json.dumps(result))

    for seed, mig in enumerate([0.10, 0.20, 0.30]):
        record("vae", seed, mig, 0.5)
    record("beta_tcvae", 0, 0.15, 0.4)
    record("beta_tcvae", 1, 0.25, 0.4)
    record("beta_tcvae", 5, 0.90, 0.9)  # no VAE run at seed 5: left out of the comparison
    summary = study.report(tmp_path)
    against = summary["beta_tcvae"]["against_vae"]
    assert against["mig"] == {"above": 2, "seeds": 2, "median_difference": pytest.approx(0.05)}
    assert against["dci_disentanglement"] == {"above": 0, "seeds": 2, "median_difference": pytest.approx(-0.1)}
    assert "sap" not in against and "against_vae" not in summary["vae"]
    assert "| beta_tcvae | 2/2 (+0.05) | - | 0/2 (-0.10) |" in study.markdown(summary)


def test_the_committed_study_records_give_the_table_in_the_results(tmp_path):
    """The records in docs/disentanglement/runs are in the repository, and docs/results.md shows their report."""
    root = Path(__file__).resolve().parents[1]
    records = root / "docs" / "disentanglement" / "runs"
    assert records.is_dir(), f"{records} is missing: the study's records must be committed (see .gitignore)"
    shutil.copytree(records, tmp_path / "runs")
    summary = study.report(tmp_path / "runs")
    assert list(summary) == list(study.STUDY) and all(len(row["seeds"]) >= 3 for row in summary.values())
    results = (root / "docs" / "results.md").read_text()
    for line in study.markdown(summary).splitlines():
        assert line in results, line
