"""YAML configs: one per model, installed with the package, validated, overridable."""

import importlib.resources

import pytest
import yaml

import vaezoo
from vaezoo import config
from vaezoo.config import ConfigError

from conftest import REPO


@pytest.mark.parametrize("name", vaezoo.list_models())
def test_every_builtin_model_has_a_yaml_config(name):
    info = vaezoo.model_info(name)
    if info.source != "vaezoo":
        pytest.skip("plugin model")
    path = REPO / "zoo_configs" / f"{name}.yaml"
    assert path.is_file()
    raw = yaml.safe_load(path.read_text())
    # Every key in the YAML is valid and ends up in the model's defaults.
    cfg = vaezoo.get_config(name)
    for key, value in raw.items():
        assert key in info.schema
        expected = tuple(value) if isinstance(value, list) else value
        assert cfg[key] == expected, key
    # The documented contents are there.
    always = ("optimizer", "learning_rate", "batch_size", "epochs", "dataset")
    where_used = ("data_shape", "code_shape", "likelihood", "architecture", "latent_dim", "prior", "beta",
                  "num_samples", "num_codes", "code_dim")
    for key in always + tuple(k for k in where_used if k in info.schema):
        assert key in raw, f"{name}.yaml lacks {key}"


def test_configs_are_package_resources():
    files = importlib.resources.files("vaezoo.zoo_configs")
    names = {p.name for p in files.iterdir() if p.name.endswith(".yaml")}
    assert {f"{n}.yaml" for n in ("vae", "beta_vae", "vae_conv", "beta_vae_conv")} <= names


def test_override_changes_the_built_model():
    model = vaezoo.get("vae", latent_dim=16, hidden_units=[64])
    assert model.latent_dim == 16 and model.hidden_units == (64,)
    assert model.encode(model_input(model))[0].shape == (2, 16)


def model_input(model):
    import numpy as np

    return np.zeros((2, *model.data_shape), "float32")


def test_unknown_key_names_key_and_valid_keys():
    with pytest.raises(ConfigError) as err:
        vaezoo.get("vae", latnt_dim=16)
    message = str(err.value)
    assert "'latnt_dim'" in message and "Did you mean 'latent_dim'" in message
    assert "Valid keys:" in message and "hidden_units" in message and "learning_rate" in message


@pytest.mark.parametrize(
    "key,value",
    [("latent_dim", "sixteen"), ("latent_dim", 1.5), ("latent_dim", True), ("hidden_units", 64),
     ("hidden_units", ["a"]), ("learning_rate", "fast"), ("beta", None), ("data_shape", [28, "x", 1])],
)
def test_wrong_type_names_key_and_valid_keys(key, value):
    with pytest.raises(ConfigError) as err:
        vaezoo.get("beta_vae", **{key: value})
    message = str(err.value)
    assert repr(key) in message and "Valid keys:" in message


def test_types_are_coerced_from_yaml():
    cfg = vaezoo.get_config("beta_vae", beta=2, hidden_units=[16, 8], seed=None)
    assert cfg["beta"] == 2.0 and isinstance(cfg["beta"], float)
    assert cfg["hidden_units"] == (16, 8)


def test_bad_choice_values_name_the_valid_ones():
    # Checked where the value enters (get_config), naming key, valid choices and value.
    with pytest.raises(ConfigError, match="'likelihood'.*one of bernoulli.*got 'gauss'"):
        vaezoo.get("vae", likelihood="gauss")
    with pytest.raises(ConfigError, match="'prior'.*one of normal.*mixture.*got 'laplace'"):
        vaezoo.get_config("vae", prior="laplace")
    with pytest.raises(ConfigError, match="'architecture'.*one of mlp, conv.*got 'rnn'"):
        vaezoo.get("vae", architecture="rnn")
    with pytest.raises(ValueError, match="divisible by 4"):
        vaezoo.get("vae_conv", data_shape=[30, 30, 1])


def test_training_keys_are_validated_but_not_passed_to_the_model():
    cfg = vaezoo.get_config("vae", learning_rate=1e-4, epochs=3)
    assert cfg["learning_rate"] == 1e-4 and cfg["epochs"] == 3
    model = vaezoo.get("vae", learning_rate=1e-4, hidden_units=[8])
    assert "learning_rate" not in model.get_config()


def test_parse_assignment_reads_yaml_values():
    assert config.parse_assignment("latent_dim=16") == ("latent_dim", 16)
    assert config.parse_assignment("hidden_units=[64, 32]") == ("hidden_units", [64, 32])
    with pytest.raises(ConfigError, match="key=value"):
        config.parse_assignment("latent_dim")


def test_source_checkout_without_install_finds_its_configs(tmp_path):
    """`python -c 'import vaezoo'` in an uninstalled checkout reads zoo_configs/ beside vaezoo/."""
    import shutil
    import subprocess
    import sys

    from conftest import REPO

    shutil.copytree(REPO / "vaezoo", tmp_path / "vaezoo")
    shutil.copytree(REPO / "zoo_configs", tmp_path / "zoo_configs")
    probe = "import vaezoo; i = vaezoo.model_info('beta_vae'); print(i.config_path, i.default_config['beta'])"
    proc = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True,
                          env={"VAEZOO_DISABLE_PLUGINS": "1", "TF_CPP_MIN_LOG_LEVEL": "3", "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    path, beta = proc.stdout.split()[-2:]
    # (An editable install of vaezoo in this environment may map vaezoo.zoo_configs elsewhere.)
    assert path.endswith("zoo_configs/beta_vae.yaml") and float(beta) == 4.0


def test_training_key_choices_are_the_ones_the_code_reads():
    from vaezoo import data, training

    assert tuple(training.OPTIMIZERS) == config.OPTIMIZER_NAMES
    assert training.PRECISIONS == config.PRECISIONS and data.BINARIZE == config.BINARIZE


def test_malformed_yaml_file_names_file_and_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("latent_dim: 4\nhidden_units: [1, 2\n")
    with pytest.raises(ConfigError, match=r"bad.yaml.*not valid YAML.*line 3"):
        config.load_yaml(path)


@pytest.mark.parametrize("raw,value", [("1e-3", 0.001), ("1E5", 1e5), ("-2.5e-1", -0.25), ("[1e-3, 2]", [0.001, 2]),
                                       ("mlp", "mlp"), ("true", True), ("16", 16)])
def test_cli_values_parse_as_a_person_means_them(raw, value):
    assert config.parse_value(raw) == value


def test_a_checkout_on_pythonpath_reads_its_own_configs(tmp_path):
    """A long job runs from a clone through PYTHONPATH while an editable install points at another checkout:
    the clone's zoo_configs/ must be the one read (not the editable install's vaezoo.zoo_configs)."""
    import os
    import shutil
    import subprocess
    import sys

    clone = tmp_path / "clone"
    shutil.copytree(REPO / "vaezoo", clone / "vaezoo", ignore=shutil.ignore_patterns("__pycache__", "weights"))
    shutil.copytree(REPO / "zoo_configs", clone / "zoo_configs", ignore=shutil.ignore_patterns("__pycache__"))
    code = "import vaezoo.config as c; print(c.builtin_config_path('vae'))"
    env = {**os.environ, "PYTHONPATH": str(clone)}
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == str(clone / "zoo_configs" / "vae.yaml")


def test_every_subpackage_is_in_the_wheel():
    # pyproject.toml lists the packages explicitly: a new subpackage (vaezoo.cli) missing there would import
    # from a checkout and fail from an installed wheel.
    import tomllib
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    listed = set(tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(root).parts) for p in (root / "vaezoo").rglob("__init__.py")}
    assert found <= listed, sorted(found - listed)
