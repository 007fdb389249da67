"""The IWAE family's other bounds and estimators (vaezoo.models.iwae): MIWAE with M = 1 is IWAE, CIWAE
interpolates the ELBO and the IWAE bound, PIWAE and RWS train the decoder on the IWAE bound and the encoder on
their own objective (the gradients checked against the models they are made of, and one real train step
against them), DReG and RWS-DReG are unbiased for the gradients they replace and DReG is the less noisy at
K = 64. On a linear-Gaussian model (tests/test_iwae.py's), fixed seeds."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import vaezoo
from vaezoo import evaluate

from test_iwae import linear_gaussian

N_DATA = 8


def _linear(name, mean_shift=0.8, **overrides):
    """The linear-Gaussian model of test_iwae as model ``name`` (its encoder and decoder), with the posterior
    mean moved by ``mean_shift`` from the exact one: far enough from p(z|x) that the encoder's gradient is
    clearly non-zero."""
    reference, _, sample_x = linear_gaussian()
    model = vaezoo.get(name, data_shape=[5], latent_dim=2, hidden_units=[], likelihood="gaussian",
                       likelihood_scale=0.5, seed=0, **overrides)
    kernel, bias = reference.posterior_layer.projection.get_weights()
    bias[:2] += mean_shift
    model.posterior_layer.projection.set_weights([kernel, bias])
    model.decoder.set_weights(reference.decoder.get_weights())
    return model, sample_x(N_DATA)


def _split(model, vector):
    """A flat gradient (trainable_variables' order) -> (encoder part, the rest)."""
    sizes = [int(np.prod(v.shape)) for v in model.trainable_variables]
    inference = {id(v) for v in [*model.encoder.trainable_variables, *model.posterior_layer.trainable_variables]}
    mask = np.concatenate([np.full(n, id(v) in inference) for n, v in zip(sizes, model.trainable_variables)])
    return vector[mask], vector[~mask]


def test_miwae_with_one_group_is_iwae_and_ciwae_goes_from_the_elbo_to_iwae():
    iwae, x = _linear("iwae", num_samples=6)
    seed = tf.constant([4, 2])
    reference = iwae.compute_terms(x, seed=seed)
    miwae, _ = _linear("miwae", num_groups=1, num_samples=6)
    terms = miwae.compute_terms(x, seed=seed)
    np.testing.assert_allclose(terms["miwae_bound"], reference["iwae_bound"], rtol=1e-6)
    # beta = 1: the Monte-Carlo ELBO of the K samples, which is the VAE's ELBO where the KL has no closed form.
    vae, _ = _linear("vae", num_samples=6, prior="mixture")
    for beta, expected in [(1.0, None), (0.0, reference["iwae_bound"])]:
        ciwae, _ = _linear("ciwae", beta=beta, num_samples=6, prior="mixture" if beta == 1.0 else "normal")
        if beta == 1.0:
            expected = vae.compute_terms(x, seed=seed)["elbo"]
        np.testing.assert_allclose(ciwae.compute_terms(x, seed=seed)["ciwae_bound"], expected, rtol=1e-5)
    # M groups of K: the mean of the M group bounds, below the bound of all M K samples (Jensen).
    miwae, _ = _linear("miwae", num_groups=3, num_samples=2)
    terms = miwae.compute_terms(x, seed=seed)
    groups = terms["log_w"].numpy().reshape(3, 2, N_DATA)
    expected = (np.logaddexp.reduce(groups, axis=1) - np.log(2)).mean(0)
    np.testing.assert_allclose(terms["miwae_bound"], expected, rtol=1e-5)
    assert np.all(terms["miwae_bound"].numpy() <= terms["iwae_bound"].numpy() + 1e-5)


def test_piwae_trains_the_decoder_on_iwae_of_all_samples_and_the_encoder_on_miwae():
    piwae, x = _linear("piwae", num_groups=2, num_samples=3)
    grads = evaluate.gradient_statistics(piwae, x, num_draws=2, seed=3)["mean"]
    iwae, _ = _linear("iwae", num_samples=6)
    miwae, _ = _linear("miwae", num_groups=2, num_samples=3)
    iwae_grads = evaluate.gradient_statistics(iwae, x, num_draws=2, seed=3)["mean"]
    miwae_grads = evaluate.gradient_statistics(miwae, x, num_draws=2, seed=3)["mean"]
    np.testing.assert_allclose(_split(piwae, grads)[1], _split(iwae, iwae_grads)[1], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(_split(piwae, grads)[0], _split(miwae, miwae_grads)[0], rtol=1e-5, atol=1e-6)
    assert np.abs(_split(iwae, iwae_grads)[0] - _split(miwae, miwae_grads)[0]).max() > 1e-3  # they differ


@pytest.mark.parametrize("name, overrides", [("piwae", {"num_groups": 2, "num_samples": 3}),
                                             ("iwae", {"gradient_estimator": "dreg"}), ("rws", {})])
def test_one_train_step_applies_each_objective_to_its_own_variables(name, overrides):
    model, x = _linear(name, **overrides)
    model.compile(keras.optimizers.SGD(0.01), steps_per_execution=1)
    assert type(model.auxiliary_optimizer) is keras.optimizers.SGD  # a copy of the main optimizer
    assert model.auxiliary_optimizer.get_config()["learning_rate"] == model.optimizer.get_config()["learning_rate"]
    state = model.seed_generator.state.numpy()
    seed = model.next_seed()  # the seed the train step will draw
    model.seed_generator.state.assign(state)
    before = [v.numpy() for v in model.trainable_variables]
    inference = {id(v) for v in model.auxiliary_variables()}
    with tf.GradientTape(persistent=True) as tape:
        terms = model.compute_terms(x, training=True, seed=seed)
        loss, aux = model.objective(terms), model.auxiliary_loss(terms)
    model.fit(x, batch_size=N_DATA, epochs=1, shuffle=False, verbose=0)
    for v, old in zip(model.trainable_variables, before):
        g = tape.gradient(aux if id(v) in inference else loss, v)
        np.testing.assert_allclose(v.numpy(), old - 0.01 * g.numpy(), rtol=1e-4, atol=1e-6, err_msg=v.path)
    assert inference and len(inference) < len(model.trainable_variables)


@pytest.mark.parametrize("estimator, reference", [(("iwae", "dreg"), ("iwae", "reparameterization")),
                                                  (("rws", "dreg"), ("rws", "wake"))])
def test_doubly_reparameterised_gradients_are_unbiased_and_dreg_is_less_noisy(estimator, reference):
    draws, k = 1500, 64
    stats = {}
    for name, grad in [estimator, reference]:
        model, x = _linear(name, num_samples=k, gradient_estimator=grad)
        stats[grad] = (evaluate.gradient_statistics(model, x, num_draws=draws, seed=11), model)
    (new, model), (old, _) = stats[estimator[1]], stats[reference[1]]
    enc_new, dec_new = _split(model, new["mean"])
    enc_old, dec_old = _split(model, old["mean"])
    np.testing.assert_allclose(dec_new, dec_old, rtol=1e-5, atol=1e-6)  # the decoder's gradient is unchanged
    var_new, _ = _split(model, new["variance"])
    var_old, _ = _split(model, old["variance"])
    z = (enc_new - enc_old) / np.sqrt((var_new + var_old) / draws)
    assert np.abs(z).max() < 4.5, z  # the same mean: unbiased (a 4.5-sigma band over the few encoder weights)
    assert np.abs(enc_old).max() > 10 * np.sqrt(var_old.max() / draws)  # a mean the test can see
    if estimator[0] == "iwae":  # Tucker et al. 2019: the IWAE encoder gradient's signal-to-noise falls with K
        assert var_new.sum() < var_old.sum()
