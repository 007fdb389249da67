"""The registry: names, wildcards, errors with suggestions, registration rules, sources."""

import keras
import pytest

import vaezoo
from vaezoo import registry
from vaezoo.config import ConfigError


def test_builtin_models_registered():
    assert {"vae", "beta_vae", "vae_conv", "beta_vae_conv"} <= set(vaezoo.list_models())


def test_list_models_wildcards_sorted():
    assert vaezoo.list_models("beta_vae*") == ["beta_vae", "beta_vae_conv", "beta_vae_conv64"]
    assert vaezoo.list_models("*conv") == sorted(n for n in vaezoo.list_models() if n.endswith("conv"))
    assert vaezoo.list_models("nothing*") == []
    names = vaezoo.list_models()
    assert names == sorted(names)


def test_is_model():
    assert vaezoo.is_model("vae")
    assert not vaezoo.is_model("vea")


def test_unknown_name_suggests_close_match():
    with pytest.raises(KeyError) as err:
        vaezoo.get("beta_vea")
    message = str(err.value)
    assert "'beta_vea'" in message and "Did you mean 'beta_vae'" in message
    assert "Registered models:" in message


def test_model_info_shows_config_and_source():
    info = vaezoo.model_info("beta_vae_conv")
    assert info.source == "vaezoo"
    assert info.family == "BetaVAE"
    assert info.config_path is not None and info.config_path.name == "beta_vae_conv.yaml"
    assert info.default_config["architecture"] == "conv"
    assert info.default_config["beta"] == 4.0


def test_get_builds_the_right_family():
    assert type(vaezoo.get("vae", hidden_units=[8], latent_dim=2)) is vaezoo.VAE
    model = vaezoo.get("beta_vae", hidden_units=[8], latent_dim=2, beta=2.5)
    assert isinstance(model, vaezoo.BetaVAE) and model.beta == 2.5


@pytest.fixture
def cleanup():
    names = []
    yield names
    for n in names:
        registry.unregister_model(n)


def test_register_duplicate_raises_unless_override(cleanup):
    def toy(latent_dim: int = 2):
        return vaezoo.VAE(latent_dim=latent_dim, hidden_units=(8,))

    cleanup.append("toy_model")
    vaezoo.register_model(toy, name="toy_model")
    with pytest.raises(ValueError, match="already registered"):
        vaezoo.register_model(toy, name="toy_model")

    def toy2(latent_dim: int = 3):
        return vaezoo.VAE(latent_dim=latent_dim, hidden_units=(8,))

    vaezoo.register_model(toy2, name="toy_model", override=True)
    assert vaezoo.get("toy_model").latent_dim == 3


def test_register_function_with_config_and_overrides(cleanup):
    cleanup.append("fn_model")

    @vaezoo.register_model(name="fn_model", config={"latent_dim": 5})
    def fn_model(latent_dim: int = 2, hidden_units: tuple[int, ...] = (8,)):
        return vaezoo.VAE(latent_dim=latent_dim, hidden_units=hidden_units)

    assert vaezoo.model_info("fn_model").source == __name__.split(".")[0]  # the defining top-level module
    assert vaezoo.get("fn_model").latent_dim == 5
    assert vaezoo.get("fn_model", latent_dim=7).latent_dim == 7
    with pytest.raises(ConfigError, match="latnt_dim"):
        vaezoo.get("fn_model", latnt_dim=7)


def test_class_name_default_is_snake_case(cleanup):
    @keras.saving.register_keras_serializable(package="vaezoo_tests")
    class MyLittleVAE(vaezoo.VAE):
        pass

    cleanup.append("my_little_vae")
    vaezoo.register_model(MyLittleVAE)
    assert vaezoo.is_model("my_little_vae")
    # A subclass inherits its bases' config keys through **kwargs.
    assert "latent_dim" in vaezoo.model_info("my_little_vae").schema


def test_readme_adding_a_model_example_works(cleanup, tmp_path):
    import re

    import numpy as np

    from conftest import REPO, batch_for

    readme = (REPO / "README.md").read_text()
    section = readme.split("## Adding a model", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    cleanup.append("free_bits_vae")
    exec(compile(code, "README.md", "exec"), {})
    model = vaezoo.get("free_bits_vae", hidden_units=[16])
    assert model.latent_dim == 16 and model.free_bits == 2.0
    x = batch_for(model, n=8)
    terms = model.compute_terms(x, seed=0)
    expected = float(np.mean(terms["reconstruction"]) + max(float(np.mean(terms["kl"])), 2.0))
    assert float(model.objective(terms)) == pytest.approx(expected, rel=1e-6)
    model.save(tmp_path / "fb.keras")
    assert keras.models.load_model(tmp_path / "fb.keras").free_bits == 2.0


def _vaezoo_imports(path):
    """The ``vaezoo.*`` modules a source file imports anywhere (module level or inside functions)."""
    import ast

    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("vaezoo"):
            found |= {f"{node.module}.{a.name}" if node.module == "vaezoo" else node.module for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("vaezoo")}
    return found


def test_pretrained_sits_below_the_registry_and_no_two_modules_import_each_other():
    # One direction only (issue 29): the registry loads weights through vaezoo.pretrained, which imports
    # nothing of the registry; writing a zoo (which builds models by name) lives above both, in vaezoo.zoo.
    from pathlib import Path

    package = Path(vaezoo.__file__).parent
    modules = {}
    for path in package.rglob("*.py"):
        parts = path.relative_to(package.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = path
    graph = {name: {m for m in _vaezoo_imports(path) if m in modules and m != name}
             for name, path in modules.items()}
    assert graph["vaezoo.pretrained"] <= {"vaezoo.fileio"}, graph["vaezoo.pretrained"]
    assert "vaezoo.pretrained" in graph["vaezoo.registry"] and "vaezoo.registry" in graph["vaezoo.zoo"]
    mutual = sorted({tuple(sorted((a, b))) for a, deps in graph.items() for b in deps
                     if a in graph.get(b, ()) and "vaezoo" not in (a, b) and "vaezoo.models" not in (a, b)})
    assert mutual == [], f"modules that import each other: {mutual}"
