"""Pretrained weights: `vaezoo.get(name, pretrained=...)`, the manifest, hash checks, the CLI, and the
shipped zoo (every shipped model's test metric measured again and compared with its manifest)."""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path

import keras
import numpy as np
import pytest

import vaezoo
from conftest import tiny, tiny_overrides
from vaezoo import cli, data, pretrained, zoo

TINY = {"hidden_units": [16], "latent_dim": 3, "data_shape": [32, 32, 1], "dataset": "sprites"}
CHECK = {"name": "test_nll", "unit": "nats", "num_samples": 8, "batch_size": 32, "seed": 0,
         "data": {"name": "sprites", "split": "test", "binarize": "none", "seed": 0, "batch_size": 64, "limit": 64}}


def _add(folder, tag, default=False, **overrides):
    model = vaezoo.get("vae", **{**TINY, **overrides})
    value = zoo.measure(model, CHECK)
    metric = {**CHECK, "value": round(value, 4)}
    zoo.add(model, tag, config={**TINY, **overrides}, dataset="sprites (test fixture)",
            schedule={"optimizer": "none"}, epochs=0, metric=metric, check=metric, folder=folder,
            default=default, command="tests/test_pretrained.py")
    return model


@pytest.fixture
def tiny_zoo(tmp_path, monkeypatch):
    """A zoo of two tags of a tiny `vae` in a temporary folder, used instead of the shipped one."""
    folder = tmp_path / "zoo"
    monkeypatch.setenv(pretrained.PRETRAINED_DIR_ENV, str(folder))
    models = {"tiny": _add(folder, "tiny"), "other": _add(folder, "other", latent_dim=2)}
    return folder, models


def _same_weights(a, b) -> bool:
    return len(a.weights) == len(b.weights) and all(
        np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(a.get_weights(), b.get_weights()))


def test_get_pretrained_loads_the_recorded_weights_and_config(tiny_zoo):
    _, models = tiny_zoo
    assert vaezoo.list_pretrained() == ["vae.other", "vae.tiny"]
    assert vaezoo.list_pretrained("vae") == ["vae.other", "vae.tiny"]
    default = vaezoo.get("vae", pretrained=True)  # the first tag added is the default
    assert vaezoo.pretrained_info("vae").tag == "tiny" and _same_weights(default, models["tiny"])
    other = vaezoo.get("vae", pretrained="other")
    assert other.latent_dim == 2 and _same_weights(other, models["other"])
    assert _same_weights(vaezoo.get("vae.other", pretrained=True), models["other"])
    fresh = vaezoo.get("vae.other")  # the tag's architecture, fresh weights (timm's name.tag)
    assert fresh.latent_dim == 2 and not _same_weights(fresh, models["other"])
    assert default.registry_name == "vae"


def test_remeasure_records_the_measured_values_and_leaves_the_weights(tiny_zoo):
    folder, _ = tiny_zoo
    path = folder / pretrained.MANIFEST_FILE
    raw = json.loads(path.read_text())
    truth = raw["models"]["vae.tiny"]["metric"]["value"]
    raw["models"]["vae.tiny"]["metric"]["value"] = truth + 5.0  # as if measured on other data
    raw["models"]["vae.tiny"]["check"]["value"] = truth - 5.0
    path.write_text(json.dumps(raw))
    sha = raw["models"]["vae.tiny"]["sha256"]
    entry = zoo.remeasure("vae.tiny", folder)
    assert entry.metric["value"] == entry.check["value"] == pytest.approx(truth, abs=1e-3)
    assert vaezoo.pretrained_info("vae.tiny").metric["value"] == entry.metric["value"] and entry.sha256 == sha
    assert pretrained.sha256(folder / entry.file) == sha
    with pytest.raises(pretrained.PretrainedError, match="No entry 'vae.nope'.*entries: vae.other, vae.tiny"):
        zoo.remeasure("vae.nope", folder)
    raw = json.loads(path.read_text())
    raw["models"]["vae.tiny"]["metric"]["value"] = truth + 5.0
    raw["models"]["vae.tiny"]["check"]["value"] = truth - 5.0
    path.write_text(json.dumps(raw))
    entry = zoo.remeasure("vae.tiny", folder, fields=["check"])  # the cheap one only
    assert entry.check["value"] == pytest.approx(truth, abs=1e-3) and entry.metric["value"] == truth + 5.0
    with pytest.raises(ValueError, match="Unknown field 'checks'; valid choices: metric, check"):
        zoo.remeasure("vae.tiny", folder, fields=["checks"])


def test_measure_is_deterministic_so_a_reloaded_model_repeats_its_manifest_value(tiny_zoo):
    # The same weights and the same seeded spec give the same number to 1e-3 (the manifest's rounding):
    # a determinism check of the protocol, not of its correctness (the next test checks that).
    model = vaezoo.get("vae", pretrained="tiny")
    entry = vaezoo.pretrained_info("vae.tiny")
    assert zoo.measure(model, entry.check) == pytest.approx(entry.check["value"], abs=1e-3)


def test_measure_agrees_with_an_importance_sampled_nll_written_out_with_tfp(tiny_zoo):
    # Independent of vaezoo.evaluate: log p(x) ~ logmeanexp_k [log p(x|z_k) + log p(z_k) - log q(z_k|x)],
    # z_k ~ q(z|x), from the model's TFP distributions, over the spec's data; averaged over 20 seeds of K=8,
    # it must agree with measure's single seed within 4 standard errors of that seed-to-seed spread.
    import numpy as np
    import tensorflow as tf

    model = vaezoo.get("vae", pretrained="tiny")
    spec = dict(CHECK["data"])
    x = np.concatenate([b.numpy() for b in data.load(spec.pop("name"), spec.pop("split"), shuffle=False, **spec)])
    assert x.shape == (64, 32, 32, 1)
    k = CHECK["num_samples"]
    q, prior = model.posterior_distribution(x), model.prior_distribution()
    estimates = []
    for seed in range(20):
        z = q.sample(k, seed=tf.constant([seed, 1]))  # [K, B, d]
        flat = tf.reshape(z, [-1, z.shape[-1]])
        tiled = np.tile(x, (k, 1, 1, 1))
        log_lik = tf.reshape(model.likelihood_distribution(flat).log_prob(tiled), [k, -1])
        log_w = log_lik + prior.log_prob(z) - q.log_prob(z)
        nll = -(tf.reduce_logsumexp(log_w, axis=0) - np.log(k))
        estimates.append(float(tf.reduce_mean(nll)))
    hand = float(np.mean(estimates))
    spread = float(np.std(estimates, ddof=1))
    measured = zoo.measure(model, CHECK)
    assert 300 < hand < 3000  # a 32x32 image of an untrained model: hundreds of nats, not a degenerate number
    assert abs(measured - hand) < 4 * spread + 1e-3, (measured, hand, spread)


def test_pretrained_model_trains_further(tiny_zoo):
    model = vaezoo.get("vae", pretrained=True)
    model.compile("adam")
    before = model.evaluate(vaezoo.data.load("sprites", "test", batch_size=64, limit=64), return_dict=True, verbose=0)
    history = model.fit(vaezoo.data.load("sprites", "train", batch_size=64, limit=256), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0]) and np.isfinite(before["loss"])


def test_default_flag_moves_to_the_new_default(tiny_zoo):
    folder, _ = tiny_zoo
    _add(folder, "newer", default=True)
    assert vaezoo.pretrained_info("vae").tag == "newer"
    assert sum(e.default for e in pretrained.manifest(folder).values()) == 1


def test_unknown_tag_lists_the_valid_ones(tiny_zoo):
    with pytest.raises(KeyError, match=r"Unknown tag 'nope' for 'vae'.*vae\.other, vae\.tiny"):
        vaezoo.get("vae", pretrained="nope")
    with pytest.raises(KeyError, match="vae.other, vae.tiny"):
        vaezoo.get("vae.nope", pretrained=True)
    with pytest.raises(ValueError, match="Two tags"):
        vaezoo.get("vae.tiny", pretrained="other")


def test_model_without_weights_names_the_models_with_some(tiny_zoo):
    with pytest.raises(KeyError, match=r"No pretrained weights for 'iwae'.*Models with weights: vae"):
        vaezoo.get("iwae", pretrained=True)
    with pytest.raises(KeyError, match="Unknown model 'vea'"):  # the model name is checked first
        vaezoo.get("vea", pretrained=True)
    with pytest.raises(TypeError, match="pretrained must be"):
        vaezoo.get("vae", pretrained=1)


def test_damaged_or_missing_weights_are_refused(tiny_zoo):
    folder, _ = tiny_zoo
    path = folder / vaezoo.pretrained_info("vae.tiny").file
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    path.write_bytes(bytes(blob))
    with pytest.raises(pretrained.PretrainedError, match=r"vae\.tiny are damaged.*sha256"):
        vaezoo.get("vae", pretrained="tiny")
    path.unlink()
    with pytest.raises(pretrained.PretrainedError, match=r"vae\.tiny are missing"):
        vaezoo.get("vae", pretrained="tiny")


def test_overrides_that_do_not_fit_the_weights(tiny_zoo):
    with pytest.raises(pretrained.PretrainedError, match=r"vae\.tiny do not fit"):
        vaezoo.get("vae", pretrained="tiny", hidden_units=[8])
    model = vaezoo.get("vae", pretrained="tiny", seed=3)  # an override that keeps the architecture
    assert model.seed == 3


def test_loading_needs_no_network(tiny_zoo, monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("network access in a test of offline loading")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    model = vaezoo.get("vae", pretrained=True)
    assert model.sample(2, seed=0).shape == (2, 32, 32, 1)


def test_manifest_records_what_the_issue_asks(tiny_zoo):
    folder, _ = tiny_zoo
    raw = json.loads((folder / pretrained.MANIFEST_FILE).read_text())
    entry = raw["models"]["vae.tiny"]
    for key in ("config", "dataset", "schedule", "epochs", "metric", "sha256", "file", "bytes", "command"):
        assert key in entry, key
    assert entry["config"]["latent_dim"] == 3 and "optimizer" not in entry["config"]  # model keys only
    assert entry["sha256"] == pretrained.sha256(folder / entry["file"])


def test_vq_vae_and_its_prior_are_measured_by_their_deterministic_nlls(tmp_path, monkeypatch):
    """A VQ-VAE's metric is -log p(x | z_q(x)); its prior's, the NLL of the codes of the shipped VQ-VAE
    (``codes_of``): the two add up to a bound on the images' NLL."""
    folder = tmp_path / "zoo"
    monkeypatch.setenv(pretrained.PRETRAINED_DIR_ENV, str(folder))
    spec = {"name": "sprites", "split": "test", "binarize": "none", "seed": 0, "batch_size": 32, "limit": 64}
    images = np.concatenate([b.numpy() for b in data.load(spec["name"], shuffle=False,
                                                          **{k: v for k, v in spec.items() if k != "name"})])
    config = {**tiny_overrides("vq_vae"), "data_shape": [32, 32, 1]}
    vq = vaezoo.get("vq_vae", **config)
    reconstruction = {"name": "test_reconstruction", "unit": "nats", "data": spec}
    expected = float(np.mean(vq.compute_terms(images)["reconstruction"]))
    assert zoo.measure(vq, reconstruction) == pytest.approx(expected, rel=1e-5)
    entry = zoo.add(vq, "tiny", config=config, dataset="sprites", schedule={}, epochs=0,
                           metric={**reconstruction, "value": expected}, check={**reconstruction, "value": expected},
                           folder=folder, prior="pixelcnn_prior.tiny")
    prior = tiny("pixelcnn_prior", **vq.prior_config())
    codes = {"name": "test_loss", "unit": "nats", "data": spec, "codes_of": entry.key}
    expected_codes = float(np.mean(prior.compute_terms(vq.encode(images))["nll"]))
    assert zoo.measure(prior, codes) == pytest.approx(expected_codes, rel=1e-5)
    assert expected_codes > 0
    assert zoo.measure(prior, {**codes, "name": "test_nll"}) == pytest.approx(expected_codes, rel=1e-5)
    with pytest.raises(ValueError, match=r"Unknown metric 'test_elbo' for PixelCNNPrior; valid choices: "
                                         r"test_bits_per_dim, test_loss, test_nll\."):
        zoo.measure(prior, {**codes, "name": "test_elbo"})


def test_pretrained_dir_without_manifest_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv(pretrained.PRETRAINED_DIR_ENV, str(tmp_path))
    with pytest.raises(FileNotFoundError, match=pretrained.PRETRAINED_DIR_ENV):
        vaezoo.list_pretrained()


def test_cli_list_sample_and_errors(tiny_zoo, tmp_path, capsys):
    assert cli.main(["list", "--pretrained"]) == 0
    out = capsys.readouterr().out
    assert "vae.tiny *" in out and "vae.other" in out and "test_nll" in out
    assert cli.main(["sample", "vae", "--pretrained", "other", "--verbose", "0",
                     "--traverse", "--out", str(tmp_path / "s.png")]) == 0
    assert (tmp_path / "s.png").is_file() and (tmp_path / "s_traversal.png").is_file()
    capsys.readouterr()
    assert cli.main(["sample", "vae", "--pretrained", "nope", "--out", str(tmp_path / "t.png")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "vae.other, vae.tiny" in err[0]
    with pytest.raises(SystemExit):  # argparse: --checkpoint and --pretrained are exclusive
        cli.main(["sample", "vae", "--pretrained", "--checkpoint", "x.keras", "--out", "x.png"])


# ---- the shipped zoo ------------------------------------------------------------------------------

SHIPPED = pretrained.manifest(pretrained.SHIPPED_DIR)


@pytest.fixture
def shipped(monkeypatch):
    monkeypatch.delenv(pretrained.PRETRAINED_DIR_ENV, raising=False)


@pytest.mark.parametrize("key", sorted(SHIPPED))
def test_shipped_weights_load_and_match_their_hash(key, shipped):
    entry = SHIPPED[key]
    assert pretrained.weights_path(entry).stat().st_size == entry.bytes < 10e6  # small enough to ship
    model = vaezoo.get(key, pretrained=True)
    assert model.registry_name == entry.name
    for field in ("name", "value", "unit", "data"):
        assert field in entry.metric, field


def _measure_again(key: str, field: str, request) -> None:
    entry = SHIPPED[key]
    metric = getattr(entry, field)
    data_dir = request.getfixturevalue("data_dir") if metric["data"]["name"] != "sprites" else None
    if metric["data"]["name"] == "binarized_mnist" and not (data_dir / "binarized-mnist" / "binarized_mnist.npz").is_file():
        pytest.skip(f"binarized_mnist.npz not found under {data_dir}")
    model = vaezoo.get(key, pretrained=True)
    assert zoo.measure(model, metric, data_dir=data_dir) == pytest.approx(metric["value"], abs=0.05)


@pytest.mark.parametrize("key", sorted(SHIPPED))
def test_shipped_models_score_their_manifest_check(key, shipped, request):
    """The cheap version of each model's metric (fewer importance samples or images), measured again."""
    _measure_again(key, "check", request)


@pytest.mark.full_metric
@pytest.mark.parametrize("key", sorted(SHIPPED))
def test_shipped_models_score_their_manifest_metric(key, shipped, request):
    """The published metric itself (e.g. 5000 importance samples on all 10,000 test images): a benchmark-sized
    job (about 18 minutes per MNIST model on a 2-core CPU), so outside the default and slow suites; the
    cheaper check above runs by default."""
    _measure_again(key, "metric", request)


def test_cli_train_fine_tunes_from_the_weights(tiny_zoo, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", "vae", "--pretrained", "other", "--epochs", "1", "--limit", "64", "--batch-size", "32",
            "--set", "learning_rate=1e-12", "--verbose", "0", "--out", str(out)]
    assert cli.main(argv) == 0
    trained = keras.models.load_model(out / "model.keras")
    start = vaezoo.get("vae", pretrained="other")
    assert trained.latent_dim == 2  # the tag's architecture, with the fixture's data set (sprites)
    for a, b in zip(trained.get_weights(), start.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-6)  # a learning rate of 1e-12 leaves the weights where they started
    capsys.readouterr()
    assert cli.main([*argv[:3], "tiny", *argv[4:]]) == 2  # the run in --out started from other weights
    assert "pretrained: 'vae.other' -> 'vae.tiny'" in capsys.readouterr().err


def test_cli_evaluate_disentanglement_metrics(tiny_zoo, capsys):
    argv = ["evaluate", "vae", "--pretrained", "tiny", "--metrics", "mig,modularity,sap", "--num-examples", "300",
            "--verbose", "0"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "on sprites_grid (32x32" in out
    values = {line.split(":")[0].strip(): float(line.split(":")[1]) for line in out.splitlines()[1:]}
    assert set(values) == {"mig", "modularity", "sap"} and all(0 <= v <= 1 for v in values.values())
    assert cli.main([*argv[:5], "mig,nope"]) == 2
    err = capsys.readouterr().err
    assert "unknown metric 'nope'" in err and "factor_vae_score" in err


def _numbers(text):
    return [float(n) for n in re.findall(r"(?<![\w.])\d+\.\d+", text)]


def test_readme_and_results_quote_the_manifest():
    # The figures people read (README's list of shipped weights, docs/results.md's pretrained table) are the
    # manifest's, to their printed precision; every shipped entry is in both.
    root = Path(__file__).resolve().parents[1]
    readme = (root / "README.md").read_text()
    shipped = readme[readme.index("Shipped now:"):]
    shipped = shipped[:shipped.index("\n## ")]
    keys = sorted(SHIPPED, key=lambda k: shipped.find(f"`{k}`"))
    priors = {e.prior for e in SHIPPED.values() if e.prior}
    for key in keys:
        start = shipped.find(f"`{key}`")
        assert start >= 0, f"README's list of shipped weights lacks {key}"
        later = [shipped.find(f"`{k}`", start + 1) for k in keys if k != key and k not in priors]
        window = shipped[start:min([p for p in later if p > start] or [len(shipped)])]
        value = SHIPPED[key].metric["value"]
        assert any(abs(n - value) < 0.0051 for n in _numbers(window)), (key, value, window[:200])
    results = (root / "docs" / "results.md").read_text()
    results = results[results.index("## Pretrained weights"):]
    results = results[:results.index("\n## ", 10)]
    rows = {m.group(1): m.group(0) for m in re.finditer(r"^\| `([\w.]+)`.*$", results, re.M) if m.group(1) in SHIPPED}
    assert set(rows) == set(SHIPPED), set(SHIPPED) ^ set(rows)
    for key, row in rows.items():
        entry = SHIPPED[key]
        cells = [c.strip() for c in row.strip("|").split("|")]
        metric, check, megabytes = _numbers(cells[3]), _numbers(cells[4]), _numbers(cells[5])
        assert abs(metric[0] - entry.metric["value"]) < 0.0051, (key, cells[3], entry.metric["value"])
        assert abs(check[0] - entry.check["value"]) < 0.0051, (key, cells[4], entry.check["value"])
        assert abs(megabytes[0] - entry.bytes / 1e6) < 0.051, (key, cells[5], entry.bytes)
