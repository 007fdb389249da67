"""Distribution layers: Keras 3 layers that own parameters and return TFP distributions.

These are vaezoo's Keras 3 replacement for ``tfp.layers`` (which are Keras 2 layers and cannot be
added to a Keras 3 model). Three kinds, composed by every model family:

* posteriors map encoder features to q(z|x);
* priors take no input and return p(z) (their parameters may be learnable);
* likelihoods map decoder outputs to p(x|z).

Every layer returns a ``tfp.distributions.Distribution`` from ``call``. They are usable in any
Keras 3 model or plain ``tf.GradientTape`` loop, and serialize with ``get_config``.

Each kind has a registry (:data:`POSTERIORS`, :data:`PRIORS`, :data:`LIKELIHOODS`, see
:mod:`vaezoo.components`) filled by :func:`register_posterior`, :func:`register_prior` and
:func:`register_likelihood`; a model's ``posterior``, ``prior`` and ``likelihood`` config keys name
an entry, and a plugin adds its own with the same decorators. A posterior layer gives, besides
q(z|x), what the families' bounds need from any q: :meth:`Posterior.sample_and_log_prob` (z from
noise, reparameterised, and log q(z|x)) and the named parameters ``encode`` returns.

Example:

>>> import keras, tensorflow as tf
>>> from vaezoo import layers
>>> posterior = layers.DiagonalGaussianPosterior(latent_dim=2)
>>> q = posterior(tf.zeros([5, 8]))               # Independent(Normal), batch [5], event [2]
>>> prior = layers.MixtureOfGaussiansPrior(latent_dim=2, num_components=3)
>>> kl = layers.kl_divergence(q, prior(), q.sample(seed=(1, 2)))  # Monte-Carlo: no closed form

References:
    Kingma & Welling, "Auto-Encoding Variational Bayes", ICLR 2014 (Gaussian posterior, ELBO).
    Loaiza-Ganem & Cunningham, "The continuous Bernoulli", NeurIPS 2019.
    Rybkin, Daniilidis & Levine, "Simple and Effective VAE Training with Calibrated Decoders"
    (learned Gaussian scale), ICML 2021.
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf
import tensorflow_probability as tfp

from vaezoo import config as cfg
from vaezoo.components import ComponentRegistry

tfd = tfp.distributions

_register = keras.saving.register_keras_serializable(package="vaezoo")

#: The posterior layers by config name (``posterior:``), in registration order.
POSTERIORS = ComponentRegistry("posterior")
#: The prior layers by config name (``prior:``).
PRIORS = ComponentRegistry("prior")
#: The likelihood layers by config name (``likelihood:``).
LIKELIHOODS = ComponentRegistry("likelihood")

register_posterior = POSTERIORS.register
register_prior = PRIORS.register
register_likelihood = LIKELIHOODS.register


def categorical_from_uniform(logits, u):
    """Inverse-CDF draw from ``Categorical(logits)`` with uniform noise ``u`` in [0, 1).

    k = min{k : F(k) > u}, F the cumulative probabilities: the same law as a categorical sample, but
    a deterministic function of the noise (reproducible exports, builtin TFLite ops only).
    """
    cdf = tf.cumsum(tf.nn.softmax(logits, axis=-1), axis=-1)
    k = tf.reduce_sum(tf.cast(cdf <= tf.expand_dims(u, -1), tf.int32), axis=-1)
    return tf.minimum(k, tf.shape(logits)[-1] - 1)


def analytic_kl(q: tfd.Distribution, p: tfd.Distribution) -> tf.Tensor | None:
    """KL(q || p) in closed form if TFP registers one for the pair, else None."""
    try:
        return tfd.kl_divergence(q, p)
    except NotImplementedError:
        return None


def kl_divergence(q: tfd.Distribution, p: tfd.Distribution, z: tf.Tensor | None = None) -> tf.Tensor:
    """KL(q || p), in closed form where TFP registers one, else a Monte-Carlo estimate.

    .. math:: \\mathrm{KL}(q\\|p) = \\mathbb{E}_q[\\log q(z) - \\log p(z)] \\approx
              \\frac{1}{K}\\sum_k \\log q(z_k) - \\log p(z_k), \\; z_k \\sim q

    Args:
        q: the approximate posterior (batch shape ``[B]``).
        p: the prior.
        z: (reparameterised) samples of ``q``, ``[B, d]`` or ``[K, B, d]``, used by the
            Monte-Carlo fallback (averaged over K); one is drawn if None.
    """
    kl = analytic_kl(q, p)
    if kl is not None:
        return kl
    if z is None:
        z = q.sample()
    estimate = q.log_prob(z) - p.log_prob(z)
    return tf.reduce_mean(estimate, axis=0) if estimate.shape.rank > 1 else estimate


# --------------------------------------------------------------------------------------------
# Posteriors
# --------------------------------------------------------------------------------------------


class Posterior(keras.layers.Layer):
    """Base of the posterior layers: encoder features -> q(z|x), and what sampling from it needs.

    A subclass defines:

    * :meth:`parameters`: features ``[B, F]`` -> a tuple of tensors named by ``parameter_names``;
      this is what a model's ``encode(x)`` returns and what its ``encode`` export signature outputs;
    * :meth:`distribution`: those parameters -> q(z|x), a TFP distribution with batch ``[B]`` and
      event ``[latent_dim]``;
    * :meth:`sample_and_log_prob`: parameters and noise ``[K, B, *noise_shape()]`` -> ``(z, log q(z|x))``,
      z ``[K, B, latent_dim]`` a differentiable function of the parameters (reparameterisation), and
      log q ``[K, B]`` (a flow computes it on the way; no inverse needed);
    * :meth:`point`: the one code per example that reconstructions and traversals decode (the mean).

    Class attributes: ``support`` (where z lives: ``"real"``, ``"sphere"``, ``"simplex"``; a prior
    must have the same), ``factorised`` (q is a product over the dimensions of z and
    :meth:`dimensionwise_log_prob` exists) and ``config_keys`` (see :mod:`vaezoo.components`).

    Args:
        latent_dim: size of z.
    """

    parameter_names: tuple[str, ...] = ()
    support = "real"
    factorised = False
    config_keys: dict = {}

    def __init__(self, latent_dim: int, **kwargs):
        kwargs.setdefault("dtype", "float32")  # distributions in float32, also under mixed precision
        super().__init__(**kwargs)
        self.latent_dim = int(latent_dim)

    def parameters(self, features) -> tuple:
        raise NotImplementedError

    def distribution(self, *params) -> tfd.Distribution:
        raise NotImplementedError

    def call(self, features):
        return self.distribution(*self.parameters(features))

    def noise_shape(self) -> tuple[int, ...]:
        """Per-sample shape of the noise :meth:`sample_and_log_prob` reads (default ``[latent_dim]``)."""
        return (self.latent_dim,)

    def draw_noise(self, num_samples, batch_size, seed) -> tf.Tensor:
        """Stateless standard normal noise ``[num_samples, batch_size, *noise_shape()]`` from ``seed``."""
        return tf.random.stateless_normal(tf.stack([num_samples, batch_size, *self.noise_shape()]), seed)

    def sample_and_log_prob(self, params, noise) -> tuple[tf.Tensor, tf.Tensor]:
        raise NotImplementedError

    def score_correction(self, params, noise) -> tf.Tensor | None:
        """For a sampler whose reparameterisation is not exact (rejection sampling), log pi(eps | params) up
        to terms free of the parameters, ``[K, B]``, eps the accepted noise: the models add the score term
        f grad log pi to the reparameterised gradient (:meth:`vaezoo.VAE.gradient_surrogate`). None (the
        default): z = h(eps, params) with eps independent of the parameters, nothing to add."""
        return None

    def point(self, params) -> tf.Tensor:
        """The code ``[B, latent_dim]`` that stands for q(z|x) (its mean)."""
        return self.distribution(*params).mean()

    def dimensionwise_log_prob(self, params, z) -> tf.Tensor:
        """log q(z_j|x) for each dimension j, ``[..., latent_dim]`` (``factorised`` posteriors only)."""
        raise NotImplementedError(f"The {type(self).__name__} posterior does not factorise over the dimensions of z.")

    def get_config(self):
        return {**super().get_config(), "latent_dim": self.latent_dim}


@_register
@register_posterior("gaussian")
class DiagonalGaussianPosterior(Posterior):
    """Features -> q(z|x) = N(mu(x), diag(exp(log_var(x)))), reparameterisable.

    A dense layer maps the features to ``2 * latent_dim`` numbers: the mean and log-variance
    (``encode`` returns ``(mean, log_variance)``). z = mu + sigma * eps, eps ~ N(0, I)
    (Kingma & Welling 2014, section 2.4).

    Args:
        latent_dim: size of z.
    """

    parameter_names = ("mean", "log_variance")
    factorised = True

    def __init__(self, latent_dim: int, **kwargs):
        super().__init__(latent_dim, **kwargs)
        self.projection = keras.layers.Dense(2 * self.latent_dim, name="projection", dtype=self.dtype_policy)

    def build(self, input_shape):
        self.projection.build(input_shape)
        self.built = True

    def parameters(self, features):
        """Mean and log-variance of q(z|x), each ``[..., latent_dim]``."""
        h = self.projection(features)
        return h[..., : self.latent_dim], h[..., self.latent_dim :]

    def distribution(self, mean, log_var) -> tfd.Distribution:
        return tfd.Independent(tfd.Normal(loc=mean, scale=tf.exp(0.5 * log_var)), reinterpreted_batch_ndims=1)

    def sample_and_log_prob(self, params, noise):
        q = self.distribution(*params)
        z = q.mean() + q.stddev() * noise
        return z, q.log_prob(z)

    def point(self, params):
        return params[0]

    def dimensionwise_log_prob(self, params, z):
        mean, log_var = params
        return tfd.Normal(mean, tf.exp(0.5 * log_var)).log_prob(z)


# --------------------------------------------------------------------------------------------
# Priors
# --------------------------------------------------------------------------------------------


class Prior(keras.layers.Layer):
    """Base of the prior layers: ``layer()`` returns p(z); the call takes no input.

    Priors also sample as a deterministic function of named noise, z = ``from_noise(**noise)``
    with ``noise`` drawn by ``draw_noise(n)``: reproducible samples and exportable sampling
    graphs (the exported ``sample_from_noise`` signature takes the noise as inputs).
    ``support`` names where z lives (as :attr:`Posterior.support`); ``config_keys`` the config keys
    the prior reads (see :mod:`vaezoo.components`).
    """

    support = "real"
    config_keys: dict = {}

    def __init__(self, latent_dim: int, **kwargs):
        kwargs.setdefault("dtype", "float32")  # distributions in float32, also under mixed precision
        super().__init__(**kwargs)
        self.latent_dim = int(latent_dim)

    def build(self, input_shape=None):
        self.built = True

    def call(self, inputs=None):
        raise NotImplementedError

    def noise_shapes(self) -> dict[str, tuple[int, ...]]:
        """Per-example shapes of the noise ``from_noise`` reads: standard normal ``noise`` [latent_dim]."""
        return {"noise": (self.latent_dim,)}

    def draw_noise(self, n, seed=None) -> dict[str, tf.Tensor]:
        """Noise for ``n`` samples: stateless from ``seed`` (int32[2]), else from TF's global generator."""
        shape = tf.stack([tf.convert_to_tensor(n, tf.int32), self.latent_dim])
        if seed is None:
            return {"noise": tf.random.normal(shape)}
        return {"noise": tf.random.stateless_normal(shape, seed)}

    def from_noise(self, noise) -> tf.Tensor:
        """z ``[n, latent_dim]`` from standard normal ``noise`` (reparameterisation)."""
        raise NotImplementedError

    def log_prob(self, z) -> tf.Tensor:
        """log p(z) of samples ``[..., latent_dim]``: ``[...]`` (the distribution's; a prior may compute it
        more cheaply)."""
        return self().log_prob(z)

    def get_config(self):
        return {**super().get_config(), "latent_dim": self.latent_dim}


_Prior = Prior  # the earlier private name


class _MixturePrior(Prior):
    """A mixture prior's sampling noise: standard normal ``noise`` [latent_dim] for the component's
    reparameterisation and a uniform ``component_noise`` [] that picks the component by the inverse CDF of the
    mixture weights (:func:`categorical_from_uniform`)."""

    def noise_shapes(self):
        return {"noise": (self.latent_dim,), "component_noise": ()}

    def draw_noise(self, n, seed=None):
        out = super().draw_noise(n, seed)
        shape = tf.reshape(tf.convert_to_tensor(n, tf.int32), [1])
        out["component_noise"] = (tf.random.uniform(shape) if seed is None
                                  else tf.random.stateless_uniform(shape, tf.reverse(seed, [0])))
        return out


@_register
@register_prior("normal")
class StandardNormalPrior(Prior):
    """p(z) = N(0, I). No parameters."""

    def call(self, inputs=None):
        zeros = tf.zeros([self.latent_dim], dtype=self.compute_dtype)
        return tfd.Independent(tfd.Normal(loc=zeros, scale=tf.ones_like(zeros)), reinterpreted_batch_ndims=1)

    def from_noise(self, noise):
        return tf.convert_to_tensor(noise, self.compute_dtype)


@_register
@register_prior("learned_normal")
class LearnedGaussianPrior(Prior):
    """p(z) = N(m, diag(s^2)) with learnable ``m`` and ``s`` (initialised at N(0, I))."""

    def build(self, input_shape=None):
        self.loc = self.add_weight(name="loc", shape=(self.latent_dim,), initializer="zeros")
        self.raw_scale = self.add_weight(name="raw_scale", shape=(self.latent_dim,), initializer="zeros")
        self.built = True

    def call(self, inputs=None):
        return tfd.Independent(tfd.Normal(loc=self.loc, scale=tf.exp(self.raw_scale)), reinterpreted_batch_ndims=1)

    def from_noise(self, noise):
        return self.loc + tf.exp(self.raw_scale) * noise


@_register
@register_prior("mixture")
class MixtureOfGaussiansPrior(_MixturePrior):
    """p(z) = sum_k pi_k N(z; m_k, diag(s_k^2)), all parameters learnable.

    Has no closed-form KL with a Gaussian posterior; :func:`kl_divergence` falls back to the
    Monte-Carlo estimate.

    Args:
        latent_dim: size of z.
        num_components: number of mixture components K.
        seed: seed of the component means' initialiser.

    Reference: Dilokthanakul et al., "Deep Unsupervised Clustering with Gaussian Mixture
    Variational Autoencoders", 2016; Tomczak & Welling, "VAE with a VampPrior", AISTATS 2018.
    """

    config_keys = {"prior_components": ("num_components", cfg.AT_LEAST_1), "seed": ("seed", None)}

    def __init__(self, latent_dim: int, num_components: int = 10, seed: int | None = None, **kwargs):
        super().__init__(latent_dim, **kwargs)
        self.num_components = int(num_components)
        self.seed = seed

    def build(self, input_shape=None):
        k, d = self.num_components, self.latent_dim
        self.logits = self.add_weight(name="logits", shape=(k,), initializer="zeros")
        self.locs = self.add_weight(
            name="locs", shape=(k, d), initializer=keras.initializers.RandomNormal(stddev=1.0, seed=self.seed)
        )
        # softplus(0.5413) = 1: components start with unit scale.
        self.raw_scales = self.add_weight(
            name="raw_scales", shape=(k, d), initializer=keras.initializers.Constant(math.log(math.e - 1.0))
        )
        self.built = True

    def call(self, inputs=None):
        components = tfd.Independent(tfd.Normal(loc=self.locs, scale=self._scales()), reinterpreted_batch_ndims=1)
        return tfd.MixtureSameFamily(tfd.Categorical(logits=self.logits), components)

    def _scales(self):
        return tf.nn.softplus(self.raw_scales) + 1e-5

    def from_noise(self, noise, component_noise):
        k = categorical_from_uniform(tf.broadcast_to(self.logits, [tf.shape(noise)[0], self.num_components]),
                                     component_noise)
        return tf.gather(self.locs, k) + tf.gather(self._scales(), k) * noise

    def get_config(self):
        return {**super().get_config(), "num_components": self.num_components, "seed": self.seed}


@_register
@register_prior("vamp")
class VampPrior(_MixturePrior):
    """The VampPrior: p(z) = (1/K) sum_k q(z | u_k), the model's own posterior at K learned pseudo-inputs
    (Tomczak & Welling 2018, eq. 9).

    The pseudo-inputs u_k have the data's shape and live in [0, 1] (the encoder's input range): with
    ``pseudo_inputs="direct"`` u = hardtanh(W), W ``[K, *data_shape]`` learned directly and initialised
    N(0.05, 0.01^2) (the paper's code for MNIST); with ``"network"`` u_k = hardtanh(g(e_k)), e_k the k-th one-hot
    vector and g a small MLP (``pseudo_input_units`` hidden ReLU units), the paper's option of learning them
    through a network. Real latents only (a posterior whose noise is standard normal ``[latent_dim]``). ``call`` returns the ``tfd.MixtureSameFamily`` of the components q(z|u_k); it needs the
    model's encoder, which the model hands over with :meth:`bind` (a prior that depends on the encoder: the KL
    with it is Monte-Carlo, and its gradient reaches the encoder through the components too).

    Sampling: a uniform ``component_noise`` picks k by the inverse CDF, and the posterior's own reparameterisation
    draws z ~ q(z|u_k) from ``noise``.

    Args:
        latent_dim: size of z.
        data_shape: shape of one pseudo-input (the model's data shape).
        num_components: K, the number of pseudo-inputs (the paper: 500 on MNIST).
        pseudo_inputs: ``"direct"`` or ``"network"``.
        seed: seed of the initialisers.

    Reference: Tomczak & Welling, "VAE with a VampPrior", AISTATS 2018.
    """

    MODES = ("direct", "network")
    #: Hidden units of the ``network`` pseudo-input generator.
    pseudo_input_units = 256
    config_keys = {"num_pseudo_inputs": ("num_components", cfg.AT_LEAST_1),
                   "pseudo_inputs": ("pseudo_inputs", cfg.OneOf(MODES)),
                   "data_shape": ("data_shape", cfg.AT_LEAST_1), "seed": ("seed", None)}

    def __init__(self, latent_dim: int, data_shape=(28, 28, 1), num_components: int = 500,
                 pseudo_inputs: str = "direct", seed: int | None = None, **kwargs):
        super().__init__(latent_dim, **kwargs)
        if pseudo_inputs not in self.MODES:
            raise cfg.ConfigError(f"pseudo_inputs must be one of {', '.join(self.MODES)}, got {pseudo_inputs!r}.")
        self.data_shape = tuple(int(d) for d in data_shape)
        self.num_components = int(num_components)
        self.pseudo_inputs = pseudo_inputs
        self.seed = seed
        self.__dict__["_posterior_parameters"] = self.__dict__["_posterior_layer"] = None
        if pseudo_inputs == "network":
            size = int(math.prod(self.data_shape))
            self.generator = keras.Sequential([
                keras.layers.Dense(self.pseudo_input_units, activation="relu", name="hidden"),
                keras.layers.Dense(size, name="pseudo_inputs",
                                   bias_initializer=keras.initializers.Constant(0.05))], name="generator")

    def bind(self, posterior_parameters, posterior_layer) -> None:
        """Hand over the model's encoder: ``posterior_parameters(images)`` -> q's parameters, and the posterior
        layer that turns them into q (a plain function and a layer the model owns: not tracked here)."""
        self.__dict__["_posterior_parameters"] = posterior_parameters
        self.__dict__["_posterior_layer"] = posterior_layer

    def build(self, input_shape=None):
        if self.pseudo_inputs == "direct":
            self.pseudo_weights = self.add_weight(
                name="pseudo_inputs", shape=(self.num_components, *self.data_shape),
                initializer=keras.initializers.RandomNormal(0.05, 0.01, seed=self.seed))
        else:
            self.generator.build((None, self.num_components))
        self.built = True

    def pseudo_input_values(self) -> tf.Tensor:
        """The K pseudo-inputs ``[K, *data_shape]``, in [0, 1]."""
        if self.pseudo_inputs == "direct":
            raw = self.pseudo_weights
        else:
            raw = tf.reshape(self.generator(tf.eye(self.num_components)), (self.num_components, *self.data_shape))
        return tf.clip_by_value(raw, 0.0, 1.0)  # hardtanh(0, 1)

    def component_parameters(self) -> tuple:
        if self.__dict__.get("_posterior_parameters") is None:
            raise RuntimeError("The vamp prior is a function of the model's encoder: build it through a model "
                               "(vaezoo.get(..., prior='vamp')), which binds it.")
        return self.__dict__["_posterior_parameters"](self.pseudo_input_values())

    def call(self, inputs=None):
        components = self.__dict__["_posterior_layer"].distribution(*self.component_parameters())
        return tfd.MixtureSameFamily(tfd.Categorical(logits=tf.zeros([self.num_components])), components)

    def log_prob(self, z):
        """log (1/K) sum_k q(z | u_k). For the diagonal Gaussian posterior, the squared distances come from two
        matrix products in float64 (sum_d z_d^2 / s_kd^2 - 2 z_d m_kd / s_kd^2 + m_kd^2 / s_kd^2: no
        ``[..., K, latent_dim]`` tensor, which at 5000 importance samples would take gigabytes; float64 so the
        expansion loses nothing to cancellation); the mixture's own ``log_prob`` otherwise."""
        if self.__dict__["_posterior_layer"].parameter_names != ("mean", "log_variance"):
            return super().log_prob(z)
        mean, log_var = (tf.cast(t, tf.float64) for t in self.component_parameters())
        z = tf.cast(z, tf.float64)
        precision = tf.exp(-log_var)  # [K, d]
        squared = (tf.einsum("...d,kd->...k", tf.square(z), precision)
                   - 2.0 * tf.einsum("...d,kd->...k", z, mean * precision)
                   + tf.reduce_sum(tf.square(mean) * precision, -1))
        log_components = -0.5 * (squared + tf.reduce_sum(log_var, -1) + self.latent_dim * math.log(2 * math.pi))
        mixture = tf.reduce_logsumexp(log_components, -1) - math.log(self.num_components)
        return tf.cast(mixture, tf.float32)

    def from_noise(self, noise, component_noise):
        noise = tf.convert_to_tensor(noise, tf.float32)
        n = tf.shape(noise)[0]
        k = categorical_from_uniform(tf.zeros([n, self.num_components]), component_noise)
        params = tuple(tf.gather(p, k) for p in self.component_parameters())
        return self.__dict__["_posterior_layer"].sample_and_log_prob(params, noise[None])[0][0]

    def get_config(self):
        return {**super().get_config(), "data_shape": list(self.data_shape), "num_components": self.num_components,
                "pseudo_inputs": self.pseudo_inputs, "seed": self.seed}


# --------------------------------------------------------------------------------------------
# Likelihoods
# --------------------------------------------------------------------------------------------


class Likelihood(keras.layers.Layer):
    """Base of the likelihood layers: decoder output ``[..., *event_shape]`` -> p(x|z).

    The event rank (number of trailing data dimensions, 3 for images) is fixed at build time,
    so leading sample dimensions (``[K, B, ...]``) pass through as batch dimensions.
    ``support`` is the interval of data values the likelihood models (``(0.0, 1.0)``), or None for
    any finite value; models refuse inputs outside it. ``config_keys``: see :mod:`vaezoo.components`.
    """

    support: tuple[float, float] | None = None
    config_keys: dict = {}

    def __init__(self, **kwargs):
        kwargs.setdefault("dtype", "float32")  # float32 log-probabilities, also under mixed precision
        super().__init__(**kwargs)
        self.event_rank = None

    def build(self, input_shape):
        self.event_rank = len(input_shape) - 1
        self.built = True

    def base_distribution(self, params) -> tfd.Distribution:
        raise NotImplementedError

    def call(self, params):
        return tfd.Independent(self.base_distribution(params), reinterpreted_batch_ndims=self.event_rank)


_Likelihood = Likelihood  # the earlier private name


@_register
@register_likelihood("bernoulli")
class BernoulliLikelihood(Likelihood):
    """p(x|z) = prod_i Bernoulli(x_i; sigmoid(logit_i)), for binary data."""

    support = (0.0, 1.0)

    def base_distribution(self, params):
        return tfd.Bernoulli(logits=params, dtype=params.dtype)


@_register
@register_likelihood("continuous_bernoulli")
class ContinuousBernoulliLikelihood(Likelihood):
    """p(x|z) = prod_i CB(x_i; lambda_i), the normalised Bernoulli density for x in [0, 1].

    Reference: Loaiza-Ganem & Cunningham, "The continuous Bernoulli: fixing a pervasive error in
    variational autoencoders", NeurIPS 2019.
    """

    support = (0.0, 1.0)

    def base_distribution(self, params):
        return tfd.ContinuousBernoulli(logits=params, dtype=params.dtype)


@_register
@register_likelihood("gaussian")
class GaussianLikelihood(Likelihood):
    """p(x|z) = N(x; mu(z), sigma^2 I) with a fixed sigma.

    This is the 'standard instance' of the VAE: log p(x|z) = -||x - mu||^2 / (2 sigma^2) + const,
    so 1/sigma^2 weighs the reconstruction term against the KL.

    Args:
        scale: the fixed standard deviation sigma (> 0).
    """

    config_keys = {"likelihood_scale": ("scale", cfg.POSITIVE)}

    def __init__(self, scale: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        if not scale > 0:
            raise ValueError(f"GaussianLikelihood scale must be > 0, got {scale!r}.")
        self.scale = float(scale)

    def base_distribution(self, params):
        return tfd.Normal(loc=params, scale=tf.cast(self.scale, params.dtype))

    def get_config(self):
        return {**super().get_config(), "scale": self.scale}


@_register
@register_likelihood("gaussian_learned_scale")
class LearnedScaleGaussianLikelihood(Likelihood):
    """p(x|z) = N(x; mu(z), diag(sigma^2)) with one learnable sigma per data dimension.

    Args:
        scale: initial sigma.
        min_scale: floor on sigma, so the density cannot collapse on constant pixels.

    Reference: Rybkin et al., "Simple and Effective VAE Training with Calibrated Decoders", 2021.
    """

    config_keys = {"likelihood_scale": ("scale", cfg.POSITIVE)}

    def __init__(self, scale: float = 1.0, min_scale: float = 1e-3, **kwargs):
        super().__init__(**kwargs)
        if not scale > min_scale:
            raise ValueError(f"LearnedScaleGaussianLikelihood scale must be > min_scale={min_scale}, got {scale!r}.")
        self.scale = float(scale)
        self.min_scale = float(min_scale)

    def build(self, input_shape):
        super().build(input_shape)
        self.log_scale = self.add_weight(
            name="log_scale",
            shape=tuple(input_shape[1:]),
            initializer=keras.initializers.Constant(math.log(self.scale - self.min_scale)),
        )

    def base_distribution(self, params):
        return tfd.Normal(loc=params, scale=self.min_scale + tf.exp(tf.cast(self.log_scale, params.dtype)))

    def get_config(self):
        return {**super().get_config(), "scale": self.scale, "min_scale": self.min_scale}


def make_posterior(name: str, latent_dim: int, **options) -> Posterior:
    """Build a posterior layer by config name (one of :data:`POSTERIORS`); ``options``: model config keys."""
    return POSTERIORS.build(name, options, latent_dim=latent_dim, name="posterior")


def make_prior(name: str, latent_dim: int, num_components: int = 10, seed: int | None = None, **options) -> Prior:
    """Build a prior layer by config name (one of :data:`PRIORS`); ``options``: model config keys."""
    options = {"prior_components": num_components, "seed": seed, **options}
    return PRIORS.build(name, options, latent_dim=latent_dim, name="prior")


def make_likelihood(name: str, scale: float = 1.0, **options) -> Likelihood:
    """Build a likelihood layer by config name (one of :data:`LIKELIHOODS`); ``options``: model config keys."""
    return LIKELIHOODS.build(name, {"likelihood_scale": scale, **options}, name="likelihood")
