"""Ex-post samplers: a density fitted to the aggregate posterior after training, to sample from instead of p(z).

A VAE's prior p(z) and its aggregate posterior q(z) = E_x[q(z|x)] differ (the "holes" of the prior), so decoding
prior samples can give images unlike the data. Ghosh et al. 2020 fit a density to the codes of the training
images after training and sample from it instead. vaezoo fits one of two densities to the posterior means
(``model.code``) of the training data:

- ``"gmm"``: a Gaussian mixture with full covariances, fitted by expectation-maximisation (Dempster et al. 1977)
  with ``reg_covar`` added to each covariance's diagonal, as scikit-learn's ``GaussianMixture`` does:

  .. math:: \\hat q(z) = \\sum_{k=1}^K \\pi_k \\, \\mathcal{N}(z; \\mu_k, \\Sigma_k).

- ``"flow"``: a masked autoregressive flow over N(0, I) (:class:`vaezoo.flows.MAFPrior`, Papamakarios et al.
  2017), fitted by maximum likelihood with Adam.

The fitted sampler is a layer of the model (``model.ex_post_sampler``): it is saved in the ``.keras`` file and in
its config, reloaded with it, and exported (the ``sample_ex_post`` and ``sample_from_noise_ex_post`` serving
signatures). ``model.sample(n, sampler="gmm")`` draws from it.

Example:

>>> import vaezoo
>>> from vaezoo import samplers
>>> model = vaezoo.get("vae", pretrained=True)
>>> # fit = samplers.fit_sampler(model, train_images, kind="gmm", num_components=10)
>>> # images = model.sample(64, seed=0, sampler="gmm")

References: Ghosh, Sajjadi, Vergari, Black & Schoelkopf, "From Variational to Deterministic Autoencoders",
ICLR 2020 (ex-post density estimation). Dempster, Laird & Rubin, "Maximum Likelihood from Incomplete Data via the
EM Algorithm", 1977. Papamakarios, Pavlakou & Murray, "Masked Autoregressive Flow for Density Estimation",
NeurIPS 2017. pythae's ``GaussianMixtureSampler`` and ``MAFSampler`` (Chadebec et al. 2022).
"""

from __future__ import annotations

import dataclasses
import math

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from vaezoo import flows
from vaezoo import layers as dl

tfd = tfp.distributions

#: The kinds of ex-post sampler, and ``"prior"`` (p(z) itself) for :meth:`vaezoo.VAE.sample`.
KINDS = ("gmm", "flow")
SAMPLER_CHOICES = ("prior", *KINDS)


class SamplerError(ValueError):
    """A sampler that cannot be fitted or used: an unknown kind, a model without one code per example, too few
    codes, or a sampler asked for that the model does not have."""


@keras.saving.register_keras_serializable(package="vaezoo")
class GaussianMixtureSampler(dl._MixturePrior):
    """A Gaussian mixture with full covariances over z, its parameters set by :func:`fit_gmm` (not trained by
    gradients): ``weights`` [K], ``means`` [K, D] and the covariances' Cholesky factors ``scale_trils`` [K, D, D].

    Samples as the mixture priors do (their noise: standard normal ``noise`` [D] and a uniform
    ``component_noise`` that picks the component), so sampling is reproducible and exportable.
    """

    def __init__(self, latent_dim: int, num_components: int = 10, **kwargs):
        super().__init__(latent_dim, **kwargs)
        self.num_components = int(num_components)

    def build(self, input_shape=None):
        k, d = self.num_components, self.latent_dim
        self.log_weights = self.add_weight(name="log_weights", shape=(k,), trainable=False,
                                           initializer=keras.initializers.Constant(-math.log(k)))
        self.means = self.add_weight(name="means", shape=(k, d), trainable=False, initializer="zeros")
        self.scale_trils = self.add_weight(name="scale_trils", shape=(k, d, d), trainable=False,
                                           initializer=lambda shape, dtype=None: tf.eye(d, batch_shape=[k], dtype=dtype))
        self.built = True

    def call(self, inputs=None):
        return tfd.MixtureSameFamily(tfd.Categorical(logits=self.log_weights),
                                     tfd.MultivariateNormalTriL(loc=self.means, scale_tril=self.scale_trils))

    def from_noise(self, noise, component_noise):
        noise = tf.convert_to_tensor(noise, tf.float32)
        k = dl.categorical_from_uniform(tf.broadcast_to(self.log_weights, [tf.shape(noise)[0], self.num_components]),
                                        component_noise)
        return tf.gather(self.means, k) + tf.linalg.matvec(tf.gather(self.scale_trils, k), noise)

    def set_parameters(self, weights, means, covariances) -> None:
        self.log_weights.assign(np.log(np.asarray(weights, np.float64)).astype("float32"))
        self.means.assign(np.asarray(means, "float32"))
        self.scale_trils.assign(np.linalg.cholesky(np.asarray(covariances, np.float64)).astype("float32"))

    def get_config(self):
        return {**super().get_config(), "num_components": self.num_components}


# --------------------------------------------------------------------------------------------
# Fitting
# --------------------------------------------------------------------------------------------


def _gaussian_log_densities(x: np.ndarray, means: np.ndarray, covariances: np.ndarray) -> np.ndarray:
    """log N(x_n; mu_k, Sigma_k), ``[N, K]`` (float64, through each covariance's Cholesky factor)."""
    n, d = x.shape
    out = np.empty((n, len(means)))
    for k, (mu, cov) in enumerate(zip(means, covariances)):
        chol = np.linalg.cholesky(cov)
        solved = np.linalg.solve(chol, (x - mu).T)  # [D, N]
        out[:, k] = -0.5 * (solved**2).sum(0) - np.log(np.diag(chol)).sum() - 0.5 * d * math.log(2 * math.pi)
    return out


def gmm_log_prob(x, weights, means, covariances) -> np.ndarray:
    """log of the mixture density at each row of ``x`` (float64)."""
    joint = _gaussian_log_densities(np.asarray(x, np.float64), means, covariances) + np.log(weights)
    top = joint.max(1, keepdims=True)
    return (top + np.log(np.exp(joint - top).sum(1, keepdims=True)))[:, 0]


def fit_gmm(x, num_components: int = 10, max_iterations: int = 200, tolerance: float = 1e-6,
            reg_covar: float = 1e-6, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Maximum-likelihood Gaussian mixture (full covariances) by EM: ``(weights, means, covariances, iterations)``.

    Starts from ``num_components`` distinct rows of ``x`` drawn with the seed as means, the data's covariance for
    every component and equal weights; stops when the mean log-likelihood gains less than ``tolerance``.
    """
    x = np.asarray(x, np.float64)
    n, d = x.shape
    if n < 2 * num_components:
        raise SamplerError(f"a {num_components}-component mixture needs at least {2 * num_components} codes; "
                           f"got {n}.")
    rng = np.random.default_rng(seed)
    means = x[rng.choice(n, num_components, replace=False)]
    covariances = np.repeat((np.cov(x, rowvar=False).reshape(d, d) + reg_covar * np.eye(d))[None], num_components, 0)
    weights = np.full(num_components, 1.0 / num_components)
    previous = -np.inf
    for iteration in range(1, max_iterations + 1):
        joint = _gaussian_log_densities(x, means, covariances) + np.log(weights)  # E step
        top = joint.max(1, keepdims=True)
        log_norm = top + np.log(np.exp(joint - top).sum(1, keepdims=True))
        resp = np.exp(joint - log_norm)
        counts = resp.sum(0) + 10 * np.finfo(np.float64).eps  # M step
        weights = counts / n
        means = (resp.T @ x) / counts[:, None]
        for k in range(num_components):
            # sum_n r_nk (x_n - mu_k)(x_n - mu_k)^T as the Gram matrix of the sqrt(r)-weighted rows: one symmetric
            # product (BLAS syrk), about ten times faster than the weighted product of two different arrays.
            weighted = (x - means[k]) * np.sqrt(resp[:, k])[:, None]
            covariances[k] = weighted.T @ weighted / counts[k] + reg_covar * np.eye(d)
        mean_log_likelihood = float(log_norm.mean())
        if mean_log_likelihood - previous < tolerance:
            break
        previous = mean_log_likelihood
    return weights, means, covariances, iteration


def _fit_flow(layer, codes: np.ndarray, epochs: int, batch_size: int, learning_rate: float, seed: int) -> None:
    """Maximum likelihood of the codes under the MAF ``layer`` (Adam, shuffled minibatches)."""
    optimizer = keras.optimizers.Adam(learning_rate)
    variables = layer.trainable_variables
    optimizer.build(variables)

    @tf.function
    def step(batch):
        with tf.GradientTape() as tape:
            loss = -tf.reduce_mean(layer.log_prob(batch))
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss

    ds = tf.data.Dataset.from_tensor_slices(codes.astype("float32"))
    ds = ds.shuffle(len(codes), seed=seed, reshuffle_each_iteration=True).batch(batch_size).prefetch(2)
    for _ in range(epochs):
        for batch in ds:
            step(batch)


def posterior_codes(model, data, max_examples: int | None = None, batch_size: int = 500) -> np.ndarray:
    """The posterior means (``model.code``) of the images of ``data`` (an array, or a data set of images or of
    ``(images, labels)`` batches; labels are not used), ``[N, latent_dim]``."""
    check_model(model)
    codes, seen = [], 0
    if isinstance(data, tf.data.Dataset):
        batches = (keras.utils.unpack_x_y_sample_weight(b)[0] for b in data)
    else:
        array = np.asarray(data)
        batches = (array[i:i + batch_size] for i in range(0, len(array), batch_size))
    for x in batches:
        if isinstance(x, dict):
            x = x["images"]
        codes.append(np.asarray(model.code(model.check_inputs(x))))
        seen += len(codes[-1])
        if max_examples is not None and seen >= max_examples:
            break
    if not codes:
        raise SamplerError("fit_sampler got no data.")
    out = np.concatenate(codes)
    return out[:max_examples] if max_examples is not None else out


def check_model(model) -> None:
    """A model the ex-post samplers fit: one continuous code per example (``latent_dim``, ``code``, ``decode``)."""
    missing = [a for a in ("latent_dim", "code", "decode", "prior_layer", "sampler_layer") if not hasattr(model, a)]
    why = None
    if missing:
        why = f"it has no {', '.join(missing)}"
    elif getattr(model, "uses_condition", False):
        why = "it is conditional (p(z|y))"
    elif model.prior_layer.support != "real":
        why = f"its codes live on {model.prior_layer.support!r}, where a Gaussian mixture or a flow over R^d puts mass off"
    if why:
        raise SamplerError(f"ex-post samplers fit one continuous code per example in R^d; {type(model).__name__} does "
                           f"not have one ({why}).")


@dataclasses.dataclass(frozen=True)
class SamplerFit:
    """What was fitted: the kind, the codes it saw, the mean log-density of the training codes and of the
    held-out codes (``validation_fraction`` of them, last in order), and EM's iterations for a mixture."""

    kind: str
    num_codes: int
    train_log_prob: float
    validation_log_prob: float | None
    iterations: int | None = None


def fit_sampler(model, data, kind: str = "gmm", *, num_components: int = 10, num_flows: int = 2,
                hidden_units=(128, 128), epochs: int = 50, batch_size: int = 256, learning_rate: float = 1e-3,
                max_examples: int | None = None, validation_fraction: float = 0.1, seed: int = 0) -> SamplerFit:
    """Fit an ex-post sampler of ``kind`` to the posterior means of ``data`` and attach it to ``model``
    (replacing any earlier one).

    Args:
        model: a continuous-latent model with one code per example (``vae``, ``beta_vae``, ``iwae``, ...).
        data: the training images (array or data set, see :func:`posterior_codes`).
        kind: ``"gmm"`` (``num_components``, EM) or ``"flow"`` (a MAF of ``num_flows`` steps of MADEs with
            ``hidden_units``, trained ``epochs`` epochs at ``batch_size`` and ``learning_rate``).
        max_examples: use at most this many images.
        validation_fraction: the share of codes held out to report the fit's held-out log-density (0: none).
        seed: seeds the mixture's start and the flow's initialisation and shuffling.
    """
    if kind not in KINDS:
        raise SamplerError(f"Unknown ex-post sampler {kind!r}; valid choices: {', '.join(KINDS)}.")
    if not 0.0 <= validation_fraction < 1.0:
        raise SamplerError(f"validation_fraction must be in [0, 1), got {validation_fraction!r}.")
    codes = posterior_codes(model, data, max_examples)
    held = int(len(codes) * validation_fraction)
    train, validation = codes[: len(codes) - held], codes[len(codes) - held:]
    iterations = None
    if kind == "gmm":
        weights, means, covariances, iterations = fit_gmm(train, num_components, seed=seed)
        layer = GaussianMixtureSampler(model.latent_dim, num_components, name="ex_post_sampler")
        layer.build()
        layer.set_parameters(weights, means, covariances)
    else:
        if len(train) < 2:
            raise SamplerError(f"a flow needs codes to fit; got {len(train)}.")
        layer = flows.MAFPrior(model.latent_dim, num_flows, hidden_units, seed=seed, name="ex_post_sampler")
        layer.build()
        _fit_flow(layer, train, epochs, batch_size, learning_rate, seed)
    model.attach_sampler(layer, kind)

    def mean_log_prob(z):
        return float(np.mean(np.asarray(layer.log_prob(tf.constant(z, tf.float32))))) if len(z) else None

    return SamplerFit(kind, len(codes), mean_log_prob(train), mean_log_prob(validation), iterations)
