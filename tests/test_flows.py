"""vaezoo.flows: the Keras 3 MADE's masks make it autoregressive (checked on its Jacobian), the context reaches
every output, and the layer round-trips through its config and a .keras file; every bijector's log-determinant
against the numerical Jacobian, its inverse, IAF's triangular Jacobian, planar's invertibility constraint; the
flow posteriors' accumulated log q against the TransformedDistribution's; the MAF prior's density against its
sampler's Jacobian; the VampPrior against the hand-computed mixture; clear errors for invalid combinations."""

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

import vaezoo
from vaezoo import flows


def _jacobian(made, x, context=None):
    x = tf.constant(x)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        if context is not None:
            context = tf.constant(context)
            tape.watch(context)
        out = made(x, context=context)  # [1, D, P]
    jx = tape.jacobian(out, x).numpy()[0, :, :, 0, :]  # [D, P, D]
    jc = None if context is None else tape.jacobian(out, context).numpy()[0, :, :, 0, :]
    return jx, jc


@pytest.mark.parametrize("order", ["left-to-right", "right-to-left", [3, 1, 5, 2, 4]])
def test_output_i_depends_exactly_on_the_inputs_of_lower_degree(order):
    made = flows.MADE(params=2, hidden_units=(24, 24), activation="tanh", input_order=order, seed=0)
    made.build((None, 5))
    for b in made.biases:  # non-zero biases, so no unit sits at a symmetric point
        b.assign(np.random.default_rng(1).normal(0, 0.3, b.shape).astype("float32"))
    x = np.random.default_rng(0).normal(size=(1, 5)).astype("float32")
    jx, _ = _jacobian(made, x)
    degrees = flows.input_degrees(5, order)
    allowed = degrees[None, :] < degrees[:, None]  # [i, j]: input j may reach output i
    for p in range(2):
        assert np.all(jx[:, p, :][~allowed] == 0.0), order  # exactly zero: the masks cut the paths
        assert np.all(np.abs(jx[:, p, :][allowed]) > 1e-6), order  # every allowed path is used
    # ordered by degree, the Jacobian is strictly lower triangular
    by_degree = np.argsort(degrees)
    assert np.all(np.triu(jx[by_degree][:, 0][:, by_degree]) == 0.0)


def test_the_context_reaches_every_output_and_is_required_when_declared():
    made = flows.MADE(params=3, hidden_units=(16,), activation="tanh", context_dim=4, seed=0)
    made.build((None, 3))
    rng = np.random.default_rng(2)
    x, h = rng.normal(size=(1, 3)).astype("float32"), rng.normal(size=(1, 4)).astype("float32")
    jx, jc = _jacobian(made, x, h)
    assert np.all(np.abs(jc).sum(-1) > 1e-6)  # the first output too (it sees no input at all)
    assert np.all(jx[0] == 0.0)
    with pytest.raises(ValueError, match="context_dim=4: pass a context"):
        made(x)
    with pytest.raises(ValueError, match="Unknown input_order 'random'; valid choices: left-to-right, right-to-left"):
        flows.MADE(input_order="random").build((None, 3))
    with pytest.raises(ValueError, match=r"permutation of 1\.\.3, got \[1, 1, 2\]"):
        flows.MADE(input_order=[1, 1, 2]).build((None, 3))


def test_made_round_trips_its_config_and_a_keras_file(tmp_path):
    made = flows.MADE(params=2, hidden_units=(8, 8), input_order=[2, 3, 1, 4], context_dim=2, seed=3)
    x = keras.Input((4,))
    h = keras.Input((2,))
    model = keras.Model([x, h], made(x, context=h))
    assert len(model.weights) == 2 * 3 + 2  # three masked layers (kernel, bias) and the two context kernels
    data = [np.random.default_rng(0).normal(size=(5, 4)).astype("float32"),
            np.random.default_rng(1).normal(size=(5, 2)).astype("float32")]
    clone = flows.MADE.from_config(made.get_config())
    clone.build((None, 4))
    clone.set_weights(made.get_weights())
    np.testing.assert_array_equal(clone(data[0], context=data[1]), made(data[0], context=data[1]))
    model.save(tmp_path / "made.keras")
    loaded = keras.models.load_model(tmp_path / "made.keras")
    np.testing.assert_array_equal(loaded.predict(data, verbose=0), model.predict(data, verbose=0))


# ---- bijectors ---------------------------------------------------------------------------------------

D = 4


def _made(context_dim=0, order="left-to-right", seed=0):
    made = flows.MADE(params=2, hidden_units=(16, 16), activation="elu", input_order=order, context_dim=context_dim,
                      seed=seed)
    made.build((None, D))
    for b in made.biases:
        b.assign(np.random.default_rng(seed + 1).normal(0, 0.3, b.shape).astype("float32"))
    return made


def _bijectors():
    rng = np.random.default_rng(0)
    n = 6
    f = lambda *shape: tf.constant(rng.normal(size=shape).astype("float32"))
    context = f(n, 5)
    made = _made(context_dim=5)
    maf_made = _made(order="right-to-left", seed=3)
    maf = tfp.bijectors.MaskedAutoregressiveFlow(
        shift_and_log_scale_fn=lambda x: (maf_made(x)[..., 0], maf_made(x)[..., 1]), unroll_loop=True)
    return {
        "planar": flows.PlanarBijector(f(n, D), f(n, D), f(n)),
        "planar_adversarial": flows.PlanarBijector(-5.0 * tf.ones([n, D]), tf.ones([n, D]), f(n)),  # w.u = -20
        "radial": flows.RadialBijector(f(n, D), f(n), f(n)),
        "radial_contracting": flows.RadialBijector(f(n, D), f(n), -8.0 * tf.ones([n])),  # beta near -alpha
        "iaf": flows.GatedAutoregressiveBijector(made, context),
        "maf": maf,
    }


@pytest.mark.parametrize("name", ["planar", "planar_adversarial", "radial", "radial_contracting", "iaf", "maf"])
def test_log_det_matches_the_numerical_jacobian_and_the_inverse_inverts(name):
    bijector = _bijectors()[name]
    x = tf.constant(np.random.default_rng(5).normal(size=(6, D)).astype("float32"))
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = bijector.forward(x)
    jacobian = tape.batch_jacobian(y, x).numpy().astype("float64")  # [n, D, D]
    numerical = np.log(np.abs(np.linalg.det(jacobian)))
    log_det = bijector.forward_log_det_jacobian(x, event_ndims=1).numpy()
    np.testing.assert_allclose(log_det, numerical, atol=2e-4)
    np.testing.assert_allclose(bijector.inverse(y).numpy(), x.numpy(), atol=2e-4)
    np.testing.assert_allclose(bijector.inverse_log_det_jacobian(y, event_ndims=1).numpy(), -numerical, atol=2e-4)
    if hasattr(bijector, "forward_and_log_det"):  # the fused pass the posteriors use
        fused_y, fused_log_det = bijector.forward_and_log_det(x)
        np.testing.assert_allclose(fused_y.numpy(), y.numpy(), atol=1e-6)
        np.testing.assert_allclose(fused_log_det.numpy(), log_det, atol=1e-6)


@pytest.mark.parametrize("order", ["left-to-right", "right-to-left"])
def test_an_iaf_step_has_a_triangular_jacobian_with_the_gates_on_its_diagonal(order):
    made = _made(context_dim=3, order=order)
    context = tf.constant(np.random.default_rng(2).normal(size=(1, 3)).astype("float32"))
    step = flows.GatedAutoregressiveBijector(made, context)
    x = tf.constant(np.random.default_rng(3).normal(size=(1, D)).astype("float32"))
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = step.forward(x)
    jacobian = tape.batch_jacobian(y, x).numpy()[0]
    rank = np.argsort(made.degrees)  # dimensions in degree order
    ordered = jacobian[np.ix_(rank, rank)]
    assert np.all(ordered[np.triu_indices(D, 1)] == 0.0)  # exactly: the masks, not a small number
    assert np.all(np.abs(ordered[np.tril_indices(D, -1)]) > 0)  # and every lower entry is reached
    _, sigma, _ = step._gates(x)
    np.testing.assert_allclose(np.diag(jacobian), sigma.numpy()[0], atol=1e-6)


def test_planar_constraint_keeps_the_map_invertible_for_any_u_and_w():
    rng = np.random.default_rng(4)
    u = tf.constant(rng.normal(size=(500, 3)).astype("float32") * 10)
    w = tf.constant(rng.normal(size=(500, 3)).astype("float32"))
    u_hat = flows.planar_u_hat(u, w)
    assert np.all(tf.reduce_sum(w * u_hat, -1).numpy() > -1)  # the condition of Rezende & Mohamed, appendix A.1
    # The derivative of the map along w, 1 + (w.u_hat) tanh'(a), stays positive: f is strictly monotone there.
    a = np.linspace(-6, 6, 101, dtype="float32")[:, None]
    slope = 1 + tf.reduce_sum(w * u_hat, -1).numpy()[None] * (1 - np.tanh(a) ** 2)
    assert slope.min() > 0


# ---- flow posteriors, MAF prior, VampPrior -----------------------------------------------------------


def _vae(**overrides):
    keras.utils.set_random_seed(0)
    options = dict(latent_dim=3, hidden_units=[16], num_flows=2, flow_hidden_units=[12], prior_flows=2,
                   num_pseudo_inputs=4, seed=0)
    return vaezoo.get("vae", **{**options, **overrides})


@pytest.mark.parametrize("posterior", ["planar", "radial", "iaf"])
def test_the_accumulated_log_q_is_the_transformed_distributions_log_prob(posterior):
    model = _vae(posterior=posterior)
    x = (np.random.default_rng(0).uniform(size=(5, 28, 28, 1)) > 0.5).astype("float32")
    params = model.encode(x)
    z, log_q = model.posterior_sample(params, 3, 5, seed=tf.constant([1, 2]))
    q = model.posterior_distribution(x)
    assert type(q).__name__.endswith("TransformedDistribution") and len(q.bijector.bijectors) == 2
    np.testing.assert_allclose(q.log_prob(z).numpy(), log_q.numpy(), atol=2e-3)
    # The KL has no closed form: the model's kl is the Monte-Carlo mean of log q - log p at its samples.
    terms = model.compute_terms(x, seed=tf.constant([3, 4]))
    np.testing.assert_allclose(terms["kl"].numpy(), (terms["log_qz"] - terms["log_pz"]).numpy().mean(0), atol=1e-5)


def test_the_flow_prior_density_is_the_change_of_variables_of_its_sampler():
    model = _vae(prior="flow")
    prior = model.prior_layer
    u = tf.constant(np.random.default_rng(1).normal(size=(7, 3)).astype("float32"))
    with tf.GradientTape() as tape:
        tape.watch(u)
        z = prior.from_noise(u)
    jacobian = tape.batch_jacobian(z, u).numpy().astype("float64")
    base = tfp.distributions.Normal(np.float64(0), 1.0).log_prob(u.numpy().astype("float64")).numpy().sum(-1)
    expected = base - np.log(np.abs(np.linalg.det(jacobian)))
    np.testing.assert_allclose(model.prior_distribution().log_prob(z).numpy(), expected, atol=1e-3)
    assert np.abs(jacobian - np.eye(3)).max() > 0.05  # a non-trivial flow (not the identity)


def test_the_vamp_prior_is_the_mixture_of_the_posteriors_at_the_pseudo_inputs():
    model = _vae(prior="vamp")
    pseudo = model.prior_layer.pseudo_input_values().numpy()
    assert pseudo.shape == (4, 28, 28, 1) and pseudo.min() >= 0 and pseudo.max() <= 1
    mean, log_var = (t.numpy().astype("float64") for t in model.encode(pseudo))
    z = np.random.default_rng(2).normal(size=(6, 3))
    sd = np.exp(0.5 * log_var)
    log_components = (-0.5 * ((z[:, None] - mean[None]) / sd[None]) ** 2 - np.log(sd[None])
                      - 0.5 * np.log(2 * np.pi)).sum(-1)  # [6, 4]
    expected = np.logaddexp.reduce(log_components, axis=1) - np.log(4)
    prior = model.prior_distribution()
    assert isinstance(prior, tfp.distributions.MixtureSameFamily)
    np.testing.assert_allclose(prior.log_prob(z.astype("float32")).numpy(), expected, atol=1e-4)
    # The model's matmul form (no [..., K, d] tensor) is the same, also for samples far from and near the means.
    np.testing.assert_allclose(model.prior_layer.log_prob(z.astype("float32")).numpy(), expected, atol=1e-4)
    near = (mean[1] + 1e-3 * np.random.default_rng(5).normal(size=(7, 3))).astype("float32")
    np.testing.assert_allclose(model.prior_layer.log_prob(near).numpy(), prior.log_prob(near).numpy(), atol=1e-4)
    batched = np.random.default_rng(6).normal(size=(2, 5, 3)).astype("float32")  # [K, B, d] as the bounds pass it
    np.testing.assert_allclose(model.prior_layer.log_prob(batched).numpy(), prior.log_prob(batched).numpy(), atol=1e-4)
    # Sampling: the component is the inverse CDF of the uniform weights, z = mu_k + sigma_k * noise.
    noise = np.random.default_rng(3).normal(size=(4, 3)).astype("float32")
    pick = np.array([0.1, 0.3, 0.6, 0.9], "float32")
    k = np.floor(pick * 4).astype(int)
    np.testing.assert_allclose(model.prior_layer.from_noise(noise, pick).numpy(), mean[k] + sd[k] * noise, atol=1e-5)


def test_vamp_pseudo_inputs_through_a_network_train_and_stay_in_range():
    model = _vae(prior="vamp", pseudo_inputs="network")
    before = model.prior_layer.pseudo_input_values().numpy()
    x = (np.random.default_rng(0).uniform(size=(16, 28, 28, 1)) > 0.5).astype("float32")
    model.compile(keras.optimizers.Adam(1e-2))
    model.fit(x, batch_size=8, epochs=2, verbose=0)
    after = model.prior_layer.pseudo_input_values().numpy()
    assert np.abs(after - before).max() > 0 and after.min() >= 0 and after.max() <= 1


@pytest.mark.parametrize("name, overrides, words", [
    ("vae", {"posterior": "iaf", "num_flows": 0}, ["num_flows", ">= 1"]),
    ("vae", {"prior": "flow", "prior_flows": 0}, ["prior_flows", ">= 1"]),
    ("vae", {"prior": "vamp", "pseudo_inputs": "learned"}, ["pseudo_inputs", "direct", "network"]),
    ("vae", {"posterior": "iaff"}, ["iaff", "iaf", "planar", "radial"]),
    ("vq_vae", {"posterior": "iaf"}, ["posterior"]),
    ("hyperspherical_vae", {"prior": "vamp"}, ["prior", "vamp", "spherical_uniform"]),
    ("iwae", {"prior": "vamp", "gradient_estimator": "dreg"}, ["vamp", "gradient_estimator"]),
    ("rws", {"prior": "vamp"}, ["vamp"]),
])
def test_invalid_combinations_name_the_key_and_the_choices(name, overrides, words):
    with pytest.raises((vaezoo.ConfigError, ValueError)) as info:
        vaezoo.get(name, **overrides)
    assert all(w in str(info.value) for w in words), str(info.value)
