"""vaezoo.train: the CLI's crash-safe run as a library call (issue 29, section 3)."""

import logging

import numpy as np
import pytest

import vaezoo
from vaezoo import runs, trainer

TINY = {"hidden_units": [16], "latent_dim": 2, "batch_size": 32}


def test_train_runs_resumes_and_refuses_another_config_from_python(tmp_path, capsys, caplog):
    out = tmp_path / "run"
    caplog.set_level(logging.INFO, logger="vaezoo")
    first = vaezoo.train("vae", "sprites", out=out, epochs=1, overrides=TINY, seed=0, limit=128, verbose=0)
    assert isinstance(first, vaezoo.TrainResult) and first.out == out and first.resumed_from is None
    assert (out / runs.MODEL_FILE).is_file() and (out / runs.CONFIG_FILE).is_file()
    assert (out / "samples.png") in first.written and all(p.is_file() for p in first.written)
    assert runs.read_state(out)["finished"] and runs.read_state(out)["epochs_done"] == 1
    assert first.config["latent_dim"] == 2 and first.model.latent_dim == 2
    # The same call with more epochs trains on from the last checkpoint, and says so on the logger only.
    second = vaezoo.train("vae", "sprites", out=out, epochs=2, overrides=TINY, seed=0, limit=128, verbose=0)
    assert second.resumed_from is not None and runs.read_state(out)["epochs_done"] == 2
    assert [row["epoch"] for row in runs.read_history(out)] == [0, 1]
    assert any("resuming at epoch 2" in r.getMessage() for r in caplog.records)
    assert capsys.readouterr().out == ""  # the library does not print
    # Finished: nothing to do, nothing trained.
    again = vaezoo.train("vae", "sprites", out=out, epochs=2, overrides=TINY, seed=0, limit=128, verbose=0)
    assert again.already_finished and again.model is None
    # Another config in the same folder is refused before any file is touched.
    before = (out / runs.CONFIG_FILE).read_text()
    with pytest.raises(trainer.RunConflictError, match="another config.*latent_dim: 2 -> 3"):
        vaezoo.train("vae", "sprites", out=out, epochs=2, overrides={**TINY, "latent_dim": 3}, limit=128, verbose=0)
    assert (out / runs.CONFIG_FILE).read_text() == before


def test_train_errors_name_the_keyword_and_the_cli_flag(tmp_path):
    # A Python caller reads the keyword it passed, a CLI user the flag: both are in the message.
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match=r"out= \(--out\) .*file is a file, not a folder"):
        vaezoo.train("vae", "sprites", out=tmp_path / "file")
    assert trainer.arg("init_output_bias") == "init_output_bias= (--init-output-bias)"
    assert trainer.arg("overrides") == "overrides= (--set)"


def test_train_refuses_what_it_could_not_reload_to_resume(tmp_path):
    with pytest.raises(TypeError, match=r"numpy.savez\(path, x=images, y=labels\)"):
        vaezoo.train("vae", np.zeros((4, 8, 8, 1), "float32"), out=tmp_path / "run")
    with pytest.raises(KeyError, match="vea"):
        vaezoo.train("vea", "sprites", out=tmp_path / "run")
    with pytest.raises(vaezoo.ConfigError, match="latent_dimm"):
        vaezoo.train("vae", "sprites", out=tmp_path / "run", overrides={"latent_dimm": 2})
    with pytest.raises(ValueError, match=r"does not combine with pretrained= \(--pretrained\)"):
        vaezoo.train("vae", out=tmp_path / "run", pretrained=True, init_output_bias=True)


def test_train_takes_an_npz_of_the_users_own_and_infers_its_shape(tmp_path, caplog):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "mine.npz", x=rng.uniform(size=(64, 12, 12, 1)).astype("float32"))
    caplog.set_level(logging.INFO, logger="vaezoo")
    result = vaezoo.train("vae", tmp_path / "mine.npz", out=tmp_path / "run", epochs=1, overrides=TINY, verbose=0)
    assert tuple(result.model.data_shape) == (12, 12, 1) and result.config["data_shape"] == [12, 12, 1]
    assert any("data_shape" in r.getMessage() or "continuous values" in r.getMessage() for r in caplog.records)
