"""The throughput benchmark's baseline and counts: the plain Keras VAE is the network of ``vae``,
and the FLOP count and matmul probe describe that network."""

import sys
from collections import Counter
from pathlib import Path

import keras
import numpy as np
import pytest

import vaezoo

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import throughput  # noqa: E402
import plain_vae  # noqa: E402
from plain_vae import PlainVAE  # noqa: E402


def _kernels(model):
    return [tuple(w.shape) for w in model.trainable_weights if len(w.shape) >= 2]


@pytest.mark.parametrize("name", sorted(plain_vae.EQUIVALENTS))
def test_plain_baseline_is_the_network_of_its_vaezoo_model(name):
    zoo, plain = vaezoo.get(name, seed=0), PlainVAE(seed=1, **plain_vae.EQUIVALENTS[name])
    assert Counter(_kernels(zoo)) == Counter(_kernels(plain)) and plain.num_samples == zoo.num_samples
    # With the zoo's weights copied over (matched by shape, in order), both reconstruct identically.
    by_shape = {}
    for w in zoo.trainable_weights:
        by_shape.setdefault(tuple(w.shape), []).append(w)
    for w in plain.trainable_weights:
        w.assign(by_shape[tuple(w.shape)].pop(0))
    assert not any(by_shape.values())  # every weight of the zoo model has its twin
    x = (np.random.default_rng(0).random((4, 28, 28, 1)) < 0.2).astype("float32")
    np.testing.assert_allclose(np.asarray(plain(x)), np.asarray(zoo(x)), atol=1e-5)


def test_plain_vamp_twin_has_the_vaezoo_prior():
    """With the zoo's weights, the twin's log p(z) is the VampPrior's (the mixture of the encoder's Gaussians at the
    clipped pseudo-inputs) and its Monte-Carlo KL the zoo's."""
    import tensorflow as tf

    zoo, plain = vaezoo.get("vae_vamp", seed=0), plain_vae.plain_twin("vae_vamp", seed=1)
    by_shape = {}
    for w in zoo.trainable_weights:
        by_shape.setdefault(tuple(w.shape), []).append(w)
    for w in plain.trainable_weights:
        w.assign(by_shape[tuple(w.shape)].pop(0))
    plain.pseudo_inputs.assign(np.random.default_rng(0).uniform(-0.2, 1.2, plain.pseudo_inputs.shape))
    zoo.prior_layer.pseudo_weights.assign(plain.pseudo_inputs)  # values outside [0, 1]: the clip is exercised
    z = np.random.default_rng(1).normal(size=(6, 50)).astype("float32")
    np.testing.assert_allclose(plain.log_prior(tf.constant(z)).numpy(), zoo.prior_distribution().log_prob(z).numpy(),
                               rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("name", sorted(plain_vae.VQ_EQUIVALENTS))
def test_plain_vq_twin_is_the_network_of_its_vaezoo_model(name):
    zoo, plain = vaezoo.get(name, seed=0), plain_vae.plain_twin(name, seed=1)
    assert Counter(_kernels(zoo)) == Counter(_kernels(plain))
    # Copy every sub-model's weights (same construction, so same order) and the codebooks: both reconstruct alike.
    parts = {"vq_vae": [("encoder", "encoder"), ("decoder", "decoder")],
             "vq_vae2": [(n, n) for n in ("bottom_encoder", "top_encoder", "top_decoder", "bottom_projection",
                                          "decoder")]}[name]
    for zoo_part, plain_part in parts:
        for a, b in zip(getattr(zoo, zoo_part).weights, getattr(plain, plain_part).weights, strict=True):
            b.assign(a)
    quantizers = [("quantizer", "quantizer")] if name == "vq_vae" else [("top_quantizer", "top_quantizer"),
                                                                        ("bottom_quantizer", "quantizer")]
    for zoo_q, plain_q in quantizers:
        getattr(plain, plain_q).codebook.assign(getattr(zoo, zoo_q).codebook)
    x = (np.random.default_rng(0).random((4, 28, 28, 1)) < 0.2).astype("float32")
    np.testing.assert_allclose(np.asarray(plain(x)), np.asarray(zoo(x)), atol=1e-5)
    # One training step of each moves the same weights the same way (the EMA codebook and the straight-through
    # gradients): identical losses and codebooks after it. Restarts draw at random, so they are off here.
    zoo2 = vaezoo.get(name, seed=0, restart_after=0)
    for a, b in zip(zoo.weights, zoo2.weights, strict=True):
        b.assign(a)
    plain.quantizer.restart_after = 10**9
    if name == "vq_vae2":
        plain.top_quantizer.restart_after = 10**9
    for model in (zoo2, plain):
        model.compile(keras.optimizers.SGD(0.1), jit_compile=False, steps_per_execution=1)
    logs_zoo = zoo2.train_on_batch(x, return_dict=True)
    logs_plain = plain.train_on_batch(x, return_dict=True)
    np.testing.assert_allclose(logs_plain["reconstruction"], logs_zoo["reconstruction"], rtol=1e-5)
    np.testing.assert_allclose(logs_plain["commitment"], logs_zoo["commitment"], rtol=1e-5, atol=1e-7)
    for zoo_q, plain_q in quantizers:
        np.testing.assert_allclose(np.asarray(getattr(plain, plain_q).codebook),
                                   np.asarray(getattr(zoo2, zoo_q).codebook), atol=1e-6)
    np.testing.assert_allclose(np.asarray(plain(x)), np.asarray(zoo2(x)), atol=1e-4)


def test_flop_count_and_matmul_probe_match_the_vae_layers():
    assert Counter(throughput.VAE_DENSE) == Counter(_kernels(vaezoo.get("vae")))
    # Forward, weight gradient, input gradient (none for the first layer): 2*in*out each.
    forward = sum(2 * i * o for i, o in throughput.VAE_DENSE)
    assert throughput.vae_train_flops_per_example() == 3 * forward - 2 * 784 * 512
    for in_sequence in (False, True):
        probe = throughput.MatmulProbe(in_sequence=in_sequence)
        assert probe.flops == throughput.BATCH * throughput.vae_train_flops_per_example()
        assert np.isfinite(float(probe.run()))


def test_twin_ratios_pair_each_family_with_its_twin_round_by_round():
    rates = {("vq_vae", "defaults"): [2.0, 4.0], ("vq_vae", "XLA off"): [3.0, 3.0],
             ("plain Keras vq_vae", "Keras defaults"): [1.0, 2.0],
             ("plain Keras vq_vae", "XLA + 32 steps/execution"): [2.0, 1.0]}
    configs = []
    for (label, setting), r in rates.items():
        c = throughput.Config(label, setting, model=None, dataset=None)
        c.rates = r
        configs.append(c)
    paired = throughput.twin_ratios(configs, ["vq_vae"])
    assert paired["vq_vae defaults / plain vq_vae Keras defaults"]["rounds"] == [2.0, 2.0]
    assert paired["vq_vae defaults / plain vq_vae XLA+32"]["rounds"] == [1.0, 4.0]
    assert paired["vq_vae XLA off / plain vq_vae XLA+32"]["median"] == 2.25
    text = throughput.render_markdown({"repeats": 2, "twins_only": True, "paired_ratios": paired,
                                       "rows": [{"model": "vq_vae", "setting": "defaults", "steps": 32,
                                                 "examples_per_s": 3, "rates": [2, 4]}]})
    assert "vq_vae defaults / plain vq_vae Keras defaults: median **2.00x**" in text


def test_per_round_summary():
    summary = throughput.per_round_summary([1.5, 1.2, 1.8])
    assert (summary["median"], summary["min"], summary["max"]) == (1.5, 1.2, 1.8)
    assert summary["rounds"] == [1.5, 1.2, 1.8]


def test_output_bias_benchmark_reports_saturation_with_and_without_the_init(data_dir, capsys):
    import json

    import output_bias

    assert output_bias.main(["--steps", "3", "3", "--data-dir", str(data_dir)]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for key in ("without_init", "with_init"):
        rows = result[key]
        assert [r["steps"] for r in rows] == [0, 3, 6]
        assert all(0.0 <= r["saturated"] <= 1.0 and r["output_spread"] >= 0.0 for r in rows)
        assert all(np.isfinite(r["reconstruction"]) for r in rows[1:])
    # The init starts the decoder at the mean image: its first steps reconstruct far better.
    assert result["with_init"][1]["reconstruction"] < result["without_init"][1]["reconstruction"]


def test_sample_quality_benchmark_writes_its_rows_and_keeps_them(data_dir, tmp_path):
    import json

    import sample_quality

    out = tmp_path / "q"
    argv = ["--out", str(out), "--data-dir", str(data_dir), "--num-samples", "200", "--only", "beta_vae_conv.sprites"]
    assert sample_quality.main(argv) == 0
    rows = {r["model"]: r for r in json.loads((out / "summary.json").read_text())["rows"]}
    assert set(rows) == {"floor: MNIST train images", "floor: sprites train images", "beta_vae_conv.sprites"}
    assert rows["beta_vae_conv.sprites"]["num_generated"] == 200 and rows["beta_vae_conv.sprites"]["fid"] > 0
    assert sample_quality.main(argv[:-2] + ["--only", "beta_vae_conv.sprites", "--samplers", "gmm",
                                            "--sampler-only"]) == 0
    rows = {r["model"]: r for r in json.loads((out / "summary.json").read_text())["rows"]}
    assert "beta_vae_conv.sprites" in rows  # kept
    assert rows["beta_vae_conv.sprites + gmm"]["sampler"]["num_codes"] == 20_000
    assert "beta_vae_conv.sprites + gmm" in (out / "table.md").read_text()


@pytest.mark.slow
def test_a_shipped_models_generation_row_is_measured_again(data_dir, tmp_path):
    """The generation table's row of the quick-start model (docs/sample_quality/summary.json) from its own
    command: the same FID, KID, precision and recall (fixed seeds; the floors too)."""
    import json

    import sample_quality

    recorded = {r["model"]: r for r in json.loads(
        (Path(__file__).resolve().parents[1] / "docs" / "sample_quality" / "summary.json").read_text())["rows"]}
    out = tmp_path / "q"
    assert sample_quality.main(["--out", str(out), "--data-dir", str(data_dir), "--only", "beta_vae_conv.sprites"]) == 0
    rows = {r["model"]: r for r in json.loads((out / "summary.json").read_text())["rows"]}
    for name in ("beta_vae_conv.sprites", "floor: sprites train images", "floor: MNIST train images"):
        for key in ("fid", "kid", "precision", "recall"):
            assert rows[name][key] == pytest.approx(recorded[name][key], rel=1e-3, abs=1e-3), (name, key)


@pytest.mark.slow
def test_vqvae2_diagnosis_finds_which_level_the_decoder_reads(data_dir, tmp_path):
    import json

    import vqvae2_diagnosis

    out = tmp_path / "diagnosis.json"
    vqvae2_diagnosis.main(["--data-dir", str(data_dir), "--limit", "200", "--samples", "4", "--out", str(out)])
    result = json.loads(out.read_text())
    own, top, bottom = (result["cases"][k] for k in ("own codes", "top of another image", "bottom of another image"))
    # The shipped model: swapping the bottom codes swaps the digit, swapping the top ones does not.
    assert own["label_of_the_image"] > 0.9 and bottom["label_of_the_other_image"] > 0.9
    assert top["label_of_the_image"] > 0.9 and bottom["reconstruction_nll"] > 100 * max(top["reconstruction_nll"], 1)
    assert abs(result["prior"]["nll"] - result["prior"]["nll_top"] - result["prior"]["nll_bottom"]) < 0.01
    assert set(result["samples"]) == {"vq_vae2", "vq_vae"} and result["samples"]["vq_vae"]["samples"] == 4


@pytest.mark.slow
def test_step_profile_times_every_stage():
    import step_profile

    result = step_profile.profile(rounds=1, calls=1)
    assert [r["stage"] for r in result["rows"]] == list(step_profile.STAGES)
    assert all(r["ms_per_step"] > 0 and len(r["rounds_ms"]) == 1 for r in result["rows"])
    rows = {r["stage"]: r for r in result["rows"]}
    assert result["rows"][0]["increment_ms"] is None and all(r["increment_ms"] is not None for r in result["rows"][1:])
    assert rows["vaezoo, fit"]["against"] == "vaezoo train_step" and rows["+ sampling"]["against"] == "network + SGD"
    assert rows["vaezoo train_step"]["increment_ms"] == pytest.approx(
        rows["vaezoo train_step"]["ms_per_step"] - rows["+ trackers"]["ms_per_step"], abs=1e-3)
    assert "| vaezoo, fit |" in step_profile.render_markdown(result)


@pytest.mark.slow
def test_conv_xla_benchmark_times_each_variant_in_its_own_process():
    import conv_xla

    # The MLP VAE compiles faster than vae_conv: the mechanism is the same for any model.
    result = conv_xla.run(rounds=1, seconds=0.2, model_name="vae", xla_flags=["--xla_no_such_flag=true"])
    rows = {r["variant"]: r for r in result["rows"]}
    assert set(rows) == {"TF defaults", "oneDNN off", "XLA_FLAGS=--xla_no_such_flag=true"}
    for name in ("TF defaults", "oneDNN off"):
        assert rows[name]["xla_examples_per_s"] > 0 and rows[name]["no_xla_examples_per_s"] > 0
    assert rows["oneDNN off"]["env"] == {"TF_ENABLE_ONEDNN_OPTS": "0"}
    assert "error" in rows["XLA_FLAGS=--xla_no_such_flag=true"]  # an unknown flag is recorded, not fatal
    assert "failed" in conv_xla.render_markdown(result)


@pytest.mark.slow
def test_pixelcnn_sampling_benchmark_checks_the_window_draws_the_same_codes(tmp_path):
    import json

    import pixelcnn_sampling

    out = tmp_path / "s.json"
    assert pixelcnn_sampling.main(["--n", "4", "--repeats", "1", "--out", str(out)]) == 0
    rows = {r["prior"]: r for r in json.loads(out.read_text())["rows"]}
    assert set(rows) == set(pixelcnn_sampling.PRIORS)
    assert all(r["same_codes"] and r["window_samples_per_second"] > 0 for r in rows.values())
    assert rows["hierarchical_pixelcnn_prior"]["code_shapes"] == {"top": [7, 7], "bottom": [14, 14]}


@pytest.mark.parametrize("module, record", [("conv_xla", "conv_xla.json"), ("step_profile", "step_profile.json"),
                                            ("throughput", "throughput_twins_d.json")])
def test_report_prints_the_table_of_a_committed_record_and_out_writes_it_back(module, record, tmp_path, capsys):
    import argparse
    import importlib
    import json

    import _report

    bench = importlib.import_module(module)
    path = Path(__file__).resolve().parents[1] / "docs" / record
    parser = argparse.ArgumentParser()
    _report.add_output_args(parser)
    assert parser.parse_args(["--report", str(path)]).report == str(path)
    assert _report.print_report(str(path), bench.render_markdown) == 0
    table = capsys.readouterr().out
    assert table.startswith("|") and table.strip() == bench.render_markdown(json.loads(path.read_text())).strip()
    out = tmp_path / "again.json"
    assert _report.emit(json.loads(path.read_text()), bench.render_markdown, str(out)) == 0
    assert json.loads(out.read_text()) == json.loads(path.read_text()) and capsys.readouterr().out == table


@pytest.mark.parametrize("name", ["vae", "iwae", "miwae", "vae_planar", "vae_vamp"])
def test_plain_twin_optimises_the_bound_of_its_vaezoo_model(name):
    """With the zoo's weights and the zoo's posterior noise, the twin's loss is the zoo model's objective: the same
    bound (ELBO, IWAE, MIWAE's groups, the planar flow's log-determinants, the VampPrior's Monte-Carlo KL)."""
    import tensorflow as tf

    zoo, plain = vaezoo.get(name, seed=0), plain_vae.plain_twin(name, seed=1)
    by_shape = {}
    for w in zoo.trainable_weights:
        by_shape.setdefault(tuple(w.shape), []).append(w)
    for w in plain.trainable_weights:
        w.assign(by_shape[tuple(w.shape)].pop(0))
    if name == "vae_planar":  # flows where u_hat's constraint acts, not saturated (the log-dets matter)
        kernel = next(w for w in plain.trainable_weights if w.shape[-1] == 10 * 101 and len(w.shape) == 2)
        kernel.assign(np.random.default_rng(2).normal(0, 0.1, kernel.shape))  # w.u < -1 for a third
        next(w for w in zoo.trainable_weights if tuple(w.shape) == tuple(kernel.shape)).assign(kernel)
    x = (np.random.default_rng(0).random((5, 28, 28, 1)) < 0.3).astype("float32")
    seed = tf.constant([3, 4], tf.int32)
    n = getattr(zoo, "num_groups", 1) * zoo.num_samples
    eps = zoo.posterior_noise(n, 5, seed)
    loss, reconstruction, kl = plain.bound(tf.constant(x), eps)
    expected = zoo.objective(zoo.compute_terms(tf.constant(x), seed=seed))
    np.testing.assert_allclose(float(loss), float(expected), rtol=1e-5)
    assert reconstruction.shape == (n, 5) and kl.shape == (5,)


@pytest.mark.slow
def test_rng_speed_variants_draw_fresh_standard_normals_every_step():
    """Every timed way of drawing the noise gives independent N(0, 1) draws per step (the sum of 32 steps has
    variance 32, not 32^2 as a repeated draw would), and the record marks what a mode cannot run."""
    import rng_speed

    seed = np.asarray([5, 6], "int32")
    for variant in rng_speed.VARIANTS[1:]:
        for mode in ("xla_fused", "xla_per_step"):
            total = np.asarray(rng_speed.make_call(variant, mode, shape=(64, 64))(seed)) / np.sqrt(rng_speed.STEPS)
            assert abs(total.mean()) < 0.05 and abs(total.std() - 1.0) < 0.05, (variant, mode)
    result = rng_speed.measure(rounds=1, calls=1, variants=("no noise", "stateless_normal threefry"), shapes=[(4, 3)])
    rows = {r["variant"]: r for r in result["rows"]}
    assert rows["no noise"]["xla_fused_noise_us"] == 0 and rows["stateless_normal threefry"]["xla_fused_us_per_step"] > 0
    assert "no_xla_error" in rows["stateless_normal threefry"]  # ThreeFry has no CPU kernel outside XLA
    assert "unsupported" in rng_speed.render_markdown(result)
    # The fit rows' experiment: inside threefry_noise the posterior draws other N(0, 1) noise from the same seed.
    import tensorflow as tf

    posterior = vaezoo.get("vae", seed=0).posterior_layer
    default = posterior.draw_noise(64, 64, seed)
    with rng_speed.threefry_noise():
        threefry = tf.function(posterior.draw_noise, jit_compile=True)(64, 64, tf.constant(seed))
    assert abs(float(tf.reduce_mean(threefry))) < 0.05 and abs(float(tf.math.reduce_std(threefry)) - 1) < 0.05
    assert not np.allclose(default, threefry)
    np.testing.assert_array_equal(posterior.draw_noise(64, 64, seed), default)  # restored on exit


def test_fused_agreement_seed_ranges():
    import fused_agreement

    assert fused_agreement.seeds_arg("0-4,7") == [0, 1, 2, 3, 4, 7]
    assert fused_agreement.seeds_arg("3") == [3]


@pytest.mark.slow
def test_fused_agreement_reports_every_block():
    """The seed sweep behind docs/results.md run E: the two paths start equal, one row per block of 4 steps
    (2 epochs of 11 steps: blocks end at steps 4, 8, 11), and on the MLP VAE they agree within the tolerance."""
    import fused_agreement

    row = fused_agreement.compare("vae", 0, {}, "threefry", blocks=True)
    assert len(row["blocks"]) == 1 + 2 * 3 and row["blocks"][0]["max_weight_difference"] == 0.0
    assert row["weights_outside_tolerance"] == 0 and row["max_weight_difference"] < 1e-4
    assert row["max_weight_difference"] == pytest.approx(row["blocks"][-1]["max_weight_difference"])
