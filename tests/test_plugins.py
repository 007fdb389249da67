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
