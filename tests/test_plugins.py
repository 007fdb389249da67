"""Plugins: a real installed distribution with `vaezoo.models` entry points, in fresh processes."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

PLUGIN_SRC = Path(__file__).parent / "plugin_pkg"

PROBE = r"""
import json, sys, warnings
warnings.simplefilter("always")
with warnings.catch_warnings(record=True) as caught:
    import vaezoo
    lazy = "vaezoo_demo_plugin.models" not in sys.modules
    names = vaezoo.list_models()
    result = {"lazy": lazy, "names": names,
              "warnings": [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]}
    if "demo_tiny_vae" in names:
        info = vaezoo.model_info("demo_tiny_vae")
        model = vaezoo.get("demo_tiny_vae")
        result.update(source=info.source, latent_dim=model.latent_dim,
                      builtin_source=vaezoo.model_info("vae").source)
        vaezoo.list_models(); vaezoo.get("vae", hidden_units=[4])  # no second load
        result["warnings_after"] = len([w for w in caught if issubclass(w.category, RuntimeWarning)])
print("RESULT" + json.dumps(result))
"""


@pytest.fixture(scope="module")
def plugin_path(tmp_path_factory):
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--target", str(target), str(PLUGIN_SRC)],
        check=True, capture_output=True, text=True,
        env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
    )
    assert list(target.glob("vaezoo_demo_plugin-*.dist-info/entry_points.txt"))
    return target


def _run(args, plugin_path, **env):
    environment = {k: v for k, v in os.environ.items() if k != "VAEZOO_DISABLE_PLUGINS"}
    environment.update(PYTHONPATH=str(plugin_path), TF_CPP_MIN_LOG_LEVEL="3", **env)
    # Run outside the checkout, so that the installed vaezoo is imported, not the source tree.
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=environment, timeout=300,
                          cwd=plugin_path)


def _probe(plugin_path, **env):
    proc = _run(["-c", PROBE], plugin_path, **env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [l for l in proc.stdout.splitlines() if l.startswith("RESULT")][-1]
    return json.loads(line[len("RESULT"):])


def test_plugin_models_load_lazily_and_broken_plugin_only_warns(plugin_path):
    result = _probe(plugin_path)
    assert result["lazy"], "plugins must not load at import time"
    assert "demo_tiny_vae" in result["names"] and "vae" in result["names"]
    assert result["source"] == "vaezoo-demo-plugin" and result["builtin_source"] == "vaezoo"
    assert result["latent_dim"] == 3  # the plugin's own default config
    broken = [w for w in result["warnings"] if "broken" in w]
    assert len(broken) == 1 and "vaezoo-demo-plugin" in broken[0] and "ImportError" in broken[0]
    assert result["warnings_after"] == len(result["warnings"])  # loaded once


def test_disable_plugins_env(plugin_path):
    result = _probe(plugin_path, VAEZOO_DISABLE_PLUGINS="1")
    assert "demo_tiny_vae" not in result["names"] and "vae" in result["names"]
    assert result["warnings"] == []


def test_cli_list_shows_the_package_of_each_model(plugin_path):
    proc = _run(["-m", "vaezoo", "list"], plugin_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {line.split()[0]: line.split() for line in proc.stdout.splitlines() if line.strip()}
    assert rows["demo_tiny_vae"][-1] == "vaezoo-demo-plugin"
    assert rows["beta_vae"][-1] == "vaezoo"
    assert "failed to load" in proc.stderr  # the broken plugin's warning, on stderr


def test_a_plugin_that_exits_or_replaces_a_builtin_only_warns(plugin_path):
    proc = _run(["-m", "vaezoo", "list"], plugin_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "demo_tiny_vae" in proc.stdout and "beta_vae" in proc.stdout
    assert "'exits'" in proc.stderr and "SystemExit: 3" in proc.stderr  # skipped, named, and the zoo lists
    assert "package 'vaezoo-demo-plugin' replaces the model 'vae_conv' of package 'vaezoo'" in proc.stderr


FACTORY = r"""
import sys, vaezoo
model = vaezoo.get("demo_factory_vae", name="my_vae")   # a factory that delegates to vaezoo.get
assert model.name == "my_vae" and model.registry_name == "demo_factory_vae", (model.name, model.registry_name)
assert model.latent_dim == 2
vaezoo.get("demo_class_vae").save(sys.argv[1])
"""


@pytest.mark.slow
def test_factory_delegating_to_get_and_exporting_a_plugin_checkpoint(plugin_path, tmp_path):
    checkpoint = tmp_path / "plug.keras"
    proc = _run(["-c", FACTORY, str(checkpoint)], plugin_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # The checkpoint holds a class of the plugin: export loads the plugins before the checkpoint.
    proc = _run(["-m", "vaezoo", "export", "demo_class_vae", "--checkpoint", str(checkpoint), "--format",
                 "saved_model", "--out", str(tmp_path / "exports")], plugin_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "exports" / "demo_class_vae" / "1" / "saved_model.pb").is_file()
    proc = _run(["-m", "vaezoo", "export", "vae", "--checkpoint", str(checkpoint), "--format", "saved_model",
                 "--out", str(tmp_path / "exports")], plugin_path)
    assert proc.returncode == 2 and "holds a 'demo_class_vae' model, not 'vae'" in proc.stderr


def _stdout_of(probe: str, plugin_path) -> str:
    proc = _run(["-c", probe], plugin_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_a_plugin_adds_a_prior_that_every_model_accepts(plugin_path):
    probe = ("import vaezoo, numpy as np\n"
             "model = vaezoo.get('vae', prior='demo_laplace', hidden_units=[8], latent_dim=2)\n"
             "x = (np.random.default_rng(0).random((2, 28, 28, 1)) > 0.5).astype('float32')\n"
             "print('RESULT', type(model.prior_layer).__name__, bool(np.all(np.isfinite(model.elbo(x, seed=0)))))\n")
    assert "RESULT DemoLaplacePrior True" in _stdout_of(probe, plugin_path)
    disabled = _run(["-c", probe], plugin_path, VAEZOO_DISABLE_PLUGINS="1")
    assert disabled.returncode != 0 and "'prior'" in disabled.stderr and "demo_laplace" in disabled.stderr


def test_a_plugin_adds_a_data_set_that_config_and_load_accept(plugin_path):
    probe = ("import vaezoo, numpy as np\n"
             "from vaezoo import data\n"
             "cfg = vaezoo.get_config('vae', dataset='demo_squares')\n"
             "ds = data.load('demo_squares', batch_size=64, labels=True, shuffle=False)\n"
             "x, y = next(iter(ds))\n"
             "print('RESULT', cfg['dataset'], x.shape, sorted(set(np.asarray(y).tolist())), ds.class_names,\n"
             "      float(np.asarray(x).max()))\n")
    assert "RESULT demo_squares (40, 8, 8, 1) [0, 1] ['dim', 'bright'] 1.0" in _stdout_of(probe, plugin_path)
    disabled = _run(["-m", "vaezoo", "config", "vae", "--data", "demo_squares"], plugin_path,
                    VAEZOO_DISABLE_PLUGINS="1")
    assert disabled.returncode == 2 and "'dataset'" in disabled.stderr and "demo_squares" in disabled.stderr
