"""The VAE and beta-VAE families (Gaussian latent variables, TFP distributions).

The VAE maximises the evidence lower bound

.. math::

    \\log p(x) \\ge \\mathcal{L}(x) = \\mathbb{E}_{q(z|x)}[\\log p(x|z)] - \\mathrm{KL}(q(z|x) \\| p(z)),

estimated with one reparameterised sample :math:`z = \\mu(x) + \\sigma(x) \\odot \\epsilon`,
:math:`\\epsilon \\sim N(0, I)`, so gradients flow through the sample. The KL is closed-form
where TFP has it for the (posterior, prior) pair, a Monte-Carlo estimate otherwise.

Example:

>>> import keras, vaezoo
>>> model = vaezoo.get("vae", latent_dim=16)
>>> model.compile(keras.optimizers.Adam(1e-3))
>>> # model.fit(dataset, epochs=10)   # metrics: loss, elbo, reconstruction, kl
>>> images = model.sample(16, seed=0)

References:
    Kingma & Welling, "Auto-Encoding Variational Bayes", ICLR 2014.
    Rezende, Mohamed & Wierstra, "Stochastic Backpropagation and Approximate Inference in Deep
    Generative Models", ICML 2014.
    Higgins et al., "beta-VAE: Learning Basic Visual Concepts with a Constrained Variational
    Framework", ICLR 2017.
    Burgess et al., "Understanding disentangling in beta-VAE", 2018 (capacity control).
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from vaezoo import bounds, components
from vaezoo import config as cfg
from vaezoo import distribute, keras_internals
from vaezoo import flows  # noqa: F401  (registers the flow posteriors and prior before the schema below reads them)
from vaezoo import layers as dl
from vaezoo import networks, samplers
from vaezoo.models.base import BaseVAE
from vaezoo.registry import register_model


@keras.saving.register_keras_serializable(package="vaezoo")
class VAE(BaseVAE):
    """Variational autoencoder: q(z|x), p(z) and p(x|z) from the registered distribution layers.

    The posterior, prior and likelihood are named by config (``posterior``, ``prior``,
    ``likelihood``; the registries :data:`vaezoo.layers.POSTERIORS`, ``PRIORS``, ``LIKELIHOODS``,
    which plugins extend). The bound is written once for any posterior through
    :meth:`vaezoo.layers.Posterior.sample_and_log_prob`.

    With ``num_samples = K > 1`` the ELBO is estimated with K samples per example,
    E_q[log p(x|z)] ~ (1/K) sum_k log p(x|z_k) (the "VAE, k samples" of Burda et al. 2016).

    Gradients: ``gradient_estimator="reparameterization"`` differentiates through
    z = mu + sigma * eps. ``"score_function"`` uses the log-derivative identity instead,

    .. math:: \\nabla_\\phi \\mathbb{E}_{q_\\phi}[f(z)] = \\mathbb{E}_{q_\\phi}[(f(z) - b) \\nabla_\\phi \\log q_\\phi(z)],

    with z held constant and a baseline b (an exponential moving average of f, a control
    variate that lowers the variance without bias since E_q[grad log q] = 0). It needs no
    differentiable sampling path, at the price of a noisier gradient (Williams 1992; Mnih &
    Gregor 2014; Ranganath et al. 2014).

    Args:
        data_shape: shape of one example.
        latent_dim: size of z.
        architecture: ``"mlp"`` or ``"conv"`` (see :mod:`vaezoo.networks`).
        hidden_units: dense layer sizes of the encoder (mirrored by the decoder).
        conv_filters: filters of the stride-2 conv layers (``conv`` only).
        activation: hidden-layer activation (``relu``, ``tanh``, ...).
        likelihood: one of :data:`vaezoo.layers.LIKELIHOODS`.
        likelihood_scale: sigma of the ``gaussian`` likelihood (fixed) or the initial sigma of
            ``gaussian_learned_scale``.
        posterior: one of :data:`vaezoo.layers.POSTERIORS` (``gaussian``: diagonal Gaussian; ``planar``,
            ``radial``, ``iaf``: normalizing flows, :mod:`vaezoo.flows`).
        prior: one of :data:`vaezoo.layers.PRIORS` (``normal``, ``learned_normal``, ``mixture``, ``vamp``: the
            VampPrior, ``flow``: a MAF); it must live where the posterior does (``support``).
        prior_components: mixture components of the ``mixture`` prior.
        num_flows: flow steps of a flow posterior.
        flow_hidden_units: hidden widths of each MADE of the ``iaf`` posterior and the ``flow`` prior.
        prior_flows: MAF steps of the ``flow`` prior.
        num_pseudo_inputs: pseudo-inputs of the ``vamp`` prior.
        pseudo_inputs: ``"direct"`` or ``"network"``, how the ``vamp`` prior learns its pseudo-inputs.
        num_samples: K, posterior samples per example in the training bound.
        gradient_estimator: ``"reparameterization"`` or ``"score_function"``.
        seed: sampling seed (see :class:`BaseVAE`).
    """

    metric_names = ("elbo", "reconstruction", "kl")
    GRADIENT_ESTIMATORS = ("reparameterization", "score_function")
    config_constraints = {
        "data_shape": cfg.AT_LEAST_1,
        "latent_dim": cfg.AT_LEAST_1,
        "architecture": cfg.OneOf(("mlp", "conv")),
        "hidden_units": cfg.AT_LEAST_1,
        "conv_filters": cfg.AT_LEAST_1,
        # The names come from the live registries; the components' own keys (prior_components,
        # likelihood_scale, ...) with the ranges each component declares.
        "likelihood": dl.LIKELIHOODS.choice(),
        "posterior": dl.POSTERIORS.choice(),
        "prior": dl.PRIORS.choice(),
        **components.constraints(dl.POSTERIORS, dl.PRIORS, dl.LIKELIHOODS),
        "num_samples": cfg.AT_LEAST_1,
        "gradient_estimator": cfg.OneOf(GRADIENT_ESTIMATORS),
    }
    #: Decay of the score-function baseline's moving average.
    BASELINE_DECAY = 0.9

    def __init__(
        self,
        data_shape: tuple[int, ...] = (28, 28, 1),
        latent_dim: int = 32,
        architecture: str = "mlp",
        hidden_units: tuple[int, ...] = (512, 256),
        conv_filters: tuple[int, ...] = (32, 64),
        activation: str = "relu",
        likelihood: str = "bernoulli",
        likelihood_scale: float = 1.0,
        prior: str = "normal",
        prior_components: int = 10,
        num_samples: int = 1,
        gradient_estimator: str = "reparameterization",
        posterior: str = "gaussian",
        num_flows: int = 4,
        flow_hidden_units: tuple[int, ...] = (320, 320),
        prior_flows: int = 2,
        num_pseudo_inputs: int = 500,
        pseudo_inputs: str = "direct",
        seed: int | None = None,
        **kwargs,
    ):
        # The arguments were checked against config_constraints (BaseVAE.__init_subclass__).
        super().__init__(data_shape=data_shape, seed=seed, **kwargs)
        self.latent_dim = int(latent_dim)
        self.architecture = architecture
        if architecture == "conv":  # XLA trains the conv networks 16% slower on CPU (docs/results.md, run C)
            self.xla_by_default = False
        self.hidden_units = tuple(int(u) for u in hidden_units)
        self.conv_filters = tuple(int(f) for f in conv_filters)
        self.activation = activation
        self.likelihood = likelihood
        self.likelihood_scale = float(likelihood_scale)
        self.prior = prior
        self.prior_components = int(prior_components)
        self.num_samples = int(num_samples)
        self.gradient_estimator = gradient_estimator
        self.posterior = posterior
        self.num_flows = int(num_flows)
        self.flow_hidden_units = tuple(int(u) for u in flow_hidden_units)
        self.prior_flows = int(prior_flows)
        self.num_pseudo_inputs = int(num_pseudo_inputs)
        self.pseudo_inputs = pseudo_inputs
        self.fuse_steps = architecture == "mlp"  # see BaseVAE.fuse_steps

        self.encoder = networks.build_encoder(
            architecture, self.data_shape, self.hidden_units, self.conv_filters, activation
        )
        self.decoder = self.make_decoder()
        options = self.component_options()
        self.posterior_layer = dl.POSTERIORS.build(posterior, options, latent_dim=self.latent_dim, name="posterior")
        self.prior_layer = dl.PRIORS.build(prior, options, latent_dim=self.latent_dim, name="prior")
        self.likelihood_layer = dl.LIKELIHOODS.build(likelihood, options, name="likelihood")
        if hasattr(self.prior_layer, "bind"):  # a prior made of the model's own posterior (the VampPrior)
            self.prior_layer.bind(self._unchecked_posterior_parameters, self.posterior_layer)
        if self.posterior_layer.support != self.prior_layer.support:
            same = [n for n, k in dl.PRIORS.items() if k.support == self.posterior_layer.support]
            raise cfg.ConfigError(
                f"The {posterior!r} posterior lives on {self.posterior_layer.support!r} but the {prior!r} prior on "
                f"{self.prior_layer.support!r}; priors on {self.posterior_layer.support!r}: {', '.join(same) or 'none'}.")
        # The score-function estimator's baseline: a moving average of the learning signal.
        self.score_baseline = self.add_weight(
            name="score_baseline", shape=(), initializer="zeros", trainable=False, dtype="float32"
        )
        # An ex-post sampler fitted after training (vaezoo.samplers.fit_sampler), or None.
        self.ex_post_sampler = None
        self.ex_post_sampler_kind = None
        self.build((None, *self.data_shape))

    def make_decoder(self):
        """The network z ``[B, latent_dim]`` -> raw likelihood parameters ``[B, *data_shape]`` (a family may
        make another, e.g. one with random weights)."""
        return networks.build_decoder(self.architecture, self.data_shape, self.latent_dim, self.hidden_units,
                                      self.conv_filters, self.activation)

    def component_options(self) -> dict:
        """The config values the posterior, prior and likelihood layers may read (their ``config_keys``)."""
        return {"prior_components": self.prior_components, "seed": self.seed, "likelihood_scale": self.likelihood_scale,
                "num_flows": self.num_flows, "flow_hidden_units": self.flow_hidden_units, "prior_flows": self.prior_flows,
                "num_pseudo_inputs": self.num_pseudo_inputs, "pseudo_inputs": self.pseudo_inputs,
                "data_shape": self.data_shape}

    def build(self, input_shape=None):
        # Built explicitly so a model whose call() never ran still has (and saves) all weights.
        self.posterior_layer.build(self.encoder.output_shape)
        self.prior_layer.build()
        self.likelihood_layer.build(self.decoder.output_shape)
        self.built = True

    # ---- distributions -----------------------------------------------------------------------

    def posterior_distribution(self, x, training=False):
        """q(z|x), a TFP distribution with batch shape ``[B]`` and event ``[latent_dim]``
        (``Independent(Normal)`` for the ``gaussian`` posterior)."""
        return self.posterior_layer.distribution(*self.posterior_parameters(x, training=training))

    def posterior_parameters(self, x, training=False, condition=None) -> tuple:
        """The parameters of q(z|x), named by ``posterior_layer.parameter_names`` (what :meth:`encode` returns).

        ``condition``: what a conditional family (``uses_condition``) also conditions on, e.g. one-hot labels
        ``[B, C]`` (q(z|x, y)); ignored here. The same argument runs through the methods below."""
        return self.posterior_layer.parameters(self.encoder(self.check_inputs(x), training=training))

    def _unchecked_posterior_parameters(self, x, training=False):
        # The model's own inputs (a VampPrior's pseudo-inputs), already of the data's shape and range.
        return self.posterior_layer.parameters(self.encoder(x, training=training))

    def prior_distribution(self, condition=None):
        """p(z) (a conditional family's p(z|condition))."""
        return self.prior_layer()

    def likelihood_distribution(self, z, training=False, seed=None, condition=None):
        """p(x|z) for z of shape ``[..., latent_dim]``; event shape is ``data_shape``.

        ``seed`` (int32[2]) seeds whatever the decoder draws (nothing for a point-estimate decoder)."""
        z = tf.cast(z, tf.float32)
        if z.shape.rank is not None and (z.shape.rank < 1 or z.shape[-1] not in (None, self.latent_dim)):
            raise ValueError(f"{self.name} decodes latents of width latent_dim={self.latent_dim} (shape (batch, "
                             f"{self.latent_dim})), got z of shape {tuple(z.shape)}.")
        return self.likelihood_layer(self.decoder_parameters(z, training=training, seed=seed, condition=condition))

    def decoder_parameters(self, z, training=False, seed=None, condition=None):
        """The decoder's raw likelihood parameters ``[..., *data_shape]`` for z ``[..., latent_dim]``."""
        lead = tf.shape(z)[:-1]
        params = self.decoder(tf.reshape(z, [-1, self.latent_dim]), training=training)
        return tf.reshape(params, tf.concat([lead, self.data_shape], axis=0))

    # ---- the bound ---------------------------------------------------------------------------

    def sample_log_probs(self, x, num_samples: int, training=False, seed=None, condition=None):
        """Draw z_1..K ~ q(z|x) and return ``(q, log p(x|z_k), log p(z_k), log q(z_k|x))``, each ``[K, B]``.

        The samples are reparameterised, or held constant for the score-function estimator. The
        noise eps of example i does not depend on how a batch is split over tf.distribute replicas.
        """
        q, _, z, log_px, log_pz, log_qz, _ = self._draw(x, num_samples, training=training, seed=seed,
                                                        condition=condition)
        return q, log_px, log_pz, log_qz

    def _draw(self, x, num_samples: int, training=False, seed=None, condition=None):
        """:meth:`sample_log_probs` with the posterior's parameters, the samples z ``[K, B, latent_dim]`` and
        the posterior's score correction ``[K, B]`` (None for an exact reparameterisation)."""
        params = self.posterior_parameters(x, training=training, condition=condition)
        q = self.posterior_layer.distribution(*params)
        seed = self.next_seed(seed)
        noise = self.posterior_noise(num_samples, tf.shape(x)[0], seed)
        z, log_qz = self.posterior_layer.sample_and_log_prob(params, noise)
        # A rejection sampler's reparameterisation is completed by a score term (see gradient_surrogate).
        correction = self.posterior_layer.score_correction(params, noise)
        if self.gradient_estimator == "score_function":
            z = tf.stop_gradient(z)
            log_qz = q.log_prob(z)  # the score: gradient through q's parameters only
        decoder_seed = tf.random.experimental.stateless_fold_in(seed, 1)
        log_px = self.likelihood_distribution(z, training=training, seed=decoder_seed, condition=condition).log_prob(x)
        return q, params, z, log_px, self.prior_log_prob(z, condition=condition), log_qz, correction

    def prior_log_prob(self, z, condition=None):
        """log p(z) of samples ``[K, B, latent_dim]``: ``[K, B]``."""
        return self.prior_layer.log_prob(z)

    def posterior_sample(self, params, num_samples: int, batch_size, seed=None):
        """z ``[K, B, latent_dim]`` ~ q(z|x) (reparameterised) and log q(z|x) ``[K, B]`` from q's parameters.

        The noise of example i does not depend on how a batch is split over tf.distribute replicas.
        """
        return self.posterior_layer.sample_and_log_prob(params, self.posterior_noise(num_samples, batch_size, seed))

    def posterior_noise(self, num_samples: int, batch_size, seed=None):
        """The posterior's noise ``[K, B, *noise_shape]`` from ``seed``, by example (the same under any
        tf.distribute split of the batch)."""
        seed = self.next_seed(seed)
        return distribute.replica_rows(
            lambda batch: self.posterior_layer.draw_noise(num_samples, batch, seed), batch_size, axis=1)

    def log_weights(self, x, num_samples: int, seed=None):
        """Importance log-weights log p(x|z_k) + log p(z_k) - log q(z_k|x), z_k ~ q(z|x): ``[K, B]``.

        log (1/K) sum_k exp(log w_k) is the K-sample importance-weighted bound on log p(x),
        and an estimate of log p(x) that is consistent as K grows (see :mod:`vaezoo.evaluate`
        and :mod:`vaezoo.bounds`).
        """
        x = self.check_inputs(x)
        _, log_px, log_pz, log_qz = self.sample_log_probs(x, num_samples, seed=seed)
        return bounds.log_weights(log_px, log_pz, log_qz)

    def compute_terms(self, x, training=False, seed=None, condition=None):
        x = self.check_inputs(x)
        q, params, z, log_px, log_pz, log_qz, correction = self._draw(x, self.samples_per_example(),
                                                                      training=training, seed=seed,
                                                                      condition=condition)
        kl = dl.analytic_kl(q, self.prior_distribution(condition=condition))
        # Per-sample KL terms: the Monte-Carlo KL where there is no closed form (zeros otherwise).
        kl_samples = tf.zeros_like(log_qz) if kl is not None else log_qz - log_pz
        if kl is None:
            kl = tf.reduce_mean(kl_samples, axis=0)
        reconstruction = -tf.reduce_mean(log_px, axis=0)
        terms = {
            "elbo": -(reconstruction + kl),
            "reconstruction": reconstruction,
            "kl": kl,
            "log_px": log_px,
            "log_pz": log_pz,
            "log_qz": log_qz,
            "kl_samples": kl_samples,
            "z": z,  # [K, B, latent_dim]
        }
        if correction is not None:
            terms["score_correction"] = correction
        # q's parameters, [B, ...] each: posterior_mean, posterior_log_variance for the Gaussian.
        terms.update({f"posterior_{n}": p for n, p in zip(self.posterior_layer.parameter_names, params)})
        return terms

    def samples_per_example(self) -> int:
        """How many z ~ q(z|x) the training bound draws per example (``num_samples``; MIWAE draws M x K)."""
        return self.num_samples

    def kl_coefficient(self):
        """Weight of the KL in the objective (the warm-up weight; beta-VAE multiplies by beta)."""
        return self.kl_weight

    def objective(self, terms):
        return tf.reduce_mean(terms["reconstruction"]) + self.kl_coefficient() * tf.reduce_mean(terms["kl"])

    # ---- the score-function (log-derivative) estimator ------------------------------------

    def score_signal(self, terms):
        """The learning signal f_k of each sample, ``[K, B]``, whose score-function term is
        sum_k (f_k - b) grad log q(z_k|x): here the z-dependent part of the ELBO's k-th sample, / K."""
        f = terms["log_px"] - self.kl_coefficient() * terms["kl_samples"]
        return f, 1.0 / self.num_samples

    def gradient_surrogate(self, terms, training=False):
        """For ``score_function``: (f - b) log q(z|x) minus its own value, so 0 in value and the
        log-derivative estimator in gradient. The baseline b moves towards the mean signal.

        For a posterior sampled by rejection (``score_correction`` in the terms, e.g. the von Mises-Fisher):
        f c minus its own value, the correction term of the rejection-sampler reparameterisation
        (Naesseth et al. 2017; Davidson et al. 2018, eq. 6): grad E[f] = E[grad f(h(eps, theta))] +
        E[f(h(eps, theta)) grad log(q(h(eps, theta)) / r(h(eps, theta)))], eps the accepted proposal."""
        if self.gradient_estimator != "score_function":
            if "score_correction" not in terms:
                return super().gradient_surrogate(terms, training)
            signal, weight = self.score_signal(terms)
            correction = terms["score_correction"]
            surrogate = weight * tf.reduce_mean(tf.reduce_sum(tf.stop_gradient(signal) * correction, axis=0))
            return -(surrogate - tf.stop_gradient(surrogate))
        signal, weight = self.score_signal(terms)
        signal = tf.stop_gradient(signal)
        centred = signal - self.score_baseline
        if training:
            decay = self.BASELINE_DECAY
            batch_mean = distribute.mean_over_replicas(tf.reduce_mean(signal))  # the same on every replica
            self.score_baseline.assign(decay * self.score_baseline + (1.0 - decay) * batch_mean)
        surrogate = weight * tf.reduce_mean(tf.reduce_sum(centred * terms["log_qz"], axis=0))
        return -(surrogate - tf.stop_gradient(surrogate))

    # ---- public API --------------------------------------------------------------------------

    def call(self, inputs, training=False):
        """Reconstruction mean E[x|z]: z sampled from q(z|x) when training, its mean otherwise."""
        params = self.posterior_parameters(inputs, training=training)
        if training:
            z = self.posterior_sample(params, 1, tf.shape(params[0])[0])[0][0]
        else:
            z = self.posterior_layer.point(params)
        return self.likelihood_distribution(z, training=training).mean()

    def encode(self, x):
        """The parameters of q(z|x), a tuple named by ``posterior_layer.parameter_names``: for the
        ``gaussian`` posterior the mean and log-variance, each ``[B, latent_dim]``. The ``encode``
        export signature returns the same, by name."""
        return self.posterior_parameters(x)

    def code(self, x):
        """The one code per example that stands for q(z|x) (the posterior mean), ``[B, latent_dim]``."""
        return self.posterior_layer.point(self.encode(x))

    def decode(self, z):
        """Likelihood mean E[x|z], ``[B, *data_shape]``."""
        return self.likelihood_distribution(z).mean()

    def reconstruct(self, x):
        """Decode the posterior mean of x."""
        return self(x, training=False)

    def traverse(self, x, steps: int = 9, limit: float = 3.0):
        """A latent traversal of one example: ``[latent_dim, steps, *data_shape]`` likelihood means.

        Row i decodes the posterior mean of ``x`` (one example, ``[1, *data_shape]`` or
        ``data_shape``) with coordinate i replaced by each of ``steps`` values from ``-limit`` to
        ``limit``, the others held: the picture by which a beta-VAE's factors are judged
        (Higgins et al. 2017, figure 7).
        """
        steps = self.check_count(steps, "steps")
        x = np.asarray(x, dtype="float32").reshape((1, *self.data_shape))
        mean = self.code(x)
        values = np.linspace(-limit, limit, steps, dtype="float32")
        z = np.repeat(np.asarray(mean), self.latent_dim * steps, axis=0).reshape(self.latent_dim, steps, -1)
        z[np.arange(self.latent_dim), :, np.arange(self.latent_dim)] = values
        images = self.decode(z.reshape(-1, self.latent_dim))
        return np.asarray(images).reshape(self.latent_dim, steps, *self.data_shape)

    def sample(self, n: int, seed=None, mean: bool = True, sampler: str = "prior"):
        """``n`` samples: z ~ p(z), then E[x|z] (``mean=True``) or x ~ p(x|z).

        ``sampler="gmm"`` or ``"flow"`` draws z from the model's ex-post sampler instead of the prior (a density
        fitted to the training codes by :func:`vaezoo.samplers.fit_sampler`)."""
        n = self.check_count(n)
        seed = self.next_seed(seed)
        source = self.sampler_layer(sampler)
        z = source.from_noise(**source.draw_noise(n, seed))
        px = self.likelihood_distribution(z)
        return px.mean() if mean else px.sample(seed=tf.reverse(seed, [0]))

    def attach_sampler(self, layer, kind: str) -> None:
        """Make ``layer`` (a fitted density over z of the ``Prior`` interface) the model's ex-post sampler of
        ``kind``; :func:`vaezoo.samplers.fit_sampler` calls it. It is saved and exported with the model."""
        if kind not in samplers.KINDS:
            raise samplers.SamplerError(f"Unknown ex-post sampler {kind!r}; valid choices: {', '.join(samplers.KINDS)}.")
        if layer.latent_dim != self.latent_dim:
            raise samplers.SamplerError(f"the sampler draws {layer.latent_dim}-dimensional codes; {self.name} decodes "
                                        f"{self.latent_dim}.")
        layer.trainable = False  # fitted, not trained with the model
        # The model's state is locked once built; add the sampler (replacing an earlier one) as Keras' own
        # post-build additions do (Layer.quantize), so that it is tracked, saved and loaded.
        with keras_internals.track_after_build(self):
            if self.ex_post_sampler is not None:
                keras_internals.untrack(self, self.ex_post_sampler)
            self.ex_post_sampler = layer
        self.ex_post_sampler_kind = kind

    def sampler_layer(self, sampler: str = "prior"):
        """The layer z is drawn from: the prior for ``"prior"``, else the fitted ex-post sampler of that kind."""
        if sampler == "prior":
            return self.prior_layer
        if sampler not in samplers.SAMPLER_CHOICES:
            raise samplers.SamplerError(f"Unknown sampler {sampler!r}; valid choices: "
                                        f"{', '.join(samplers.SAMPLER_CHOICES)}.")
        if self.ex_post_sampler_kind != sampler:
            has = f" (it has a {self.ex_post_sampler_kind!r} one)" if self.ex_post_sampler_kind else ""
            raise samplers.SamplerError(f"{self.name} has no fitted {sampler!r} sampler{has}; fit one with "
                                        f"vaezoo.samplers.fit_sampler(model, train_images, kind={sampler!r}).")
        return self.ex_post_sampler

    def sample_from_noise(self, **noise):
        """E[x|z] for z = the prior's transform of ``noise`` (names: ``prior_layer.noise_shapes()``;
        standard normal ``noise`` [n, latent_dim], plus uniform ``component_noise`` [n] for a mixture)."""
        return self.decode(self.prior_layer.from_noise(**noise))

    def elbo(self, x, seed=None):
        """ELBO estimate per example (``num_samples`` samples), ``[B]`` (nats)."""
        return self.compute_terms(x, training=False, seed=seed)["elbo"]

    def endpoints(self):
        """``serving_default`` (reconstruction), ``encode``, ``decode``, ``sample`` (from n),
        ``sample_from_noise`` and ``elbo`` (the bound's per-example terms, as the metrics, from images
        and an int32[2] seed)."""
        f32 = tf.float32
        images = {"images": tf.TensorSpec([None, *self.data_shape], f32)}
        noise = {k: tf.TensorSpec([None, *shape], f32) for k, shape in self.prior_layer.noise_shapes().items()}
        generated = self._generated_from(self.prior_layer)

        def bound(images, seed):
            terms = self.compute_terms(images, training=False, seed=seed)
            return {k: terms[k] for k in self.metric_names}  # the bound and its parts, per example

        return {
            "serving_default": (lambda images: {"reconstruction": self.reconstruct(images)}, images),
            "encode": (lambda images: dict(zip(self.posterior_layer.parameter_names, self.encode(images))), images),
            "decode": (lambda z: {"images": self.decode(z)}, {"z": tf.TensorSpec([None, self.latent_dim], f32)}),
            "sample": (lambda n: generated(self.prior_layer.draw_noise(n)), {"n": tf.TensorSpec([], tf.int32)}),
            "sample_from_noise": (lambda **kw: generated(kw), noise),
            "elbo": (bound, {**images, "seed": tf.TensorSpec([2], tf.int32)}),
            **self._ex_post_endpoints(),
        }

    def _generated_from(self, layer):
        """noise -> ``{"images": E[x|z], "z": z}`` with z = ``layer.from_noise(**noise)`` (the prior or a sampler)."""

        def generated(noise):
            z = layer.from_noise(**noise)
            return {"images": self.decode(z), "z": z}

        return generated

    def _ex_post_endpoints(self) -> dict:
        """``sample_ex_post`` (from n) and ``sample_from_noise_ex_post`` when an ex-post sampler is fitted."""
        if self.ex_post_sampler is None:
            return {}
        layer = self.ex_post_sampler
        noise = {k: tf.TensorSpec([None, *shape], tf.float32) for k, shape in layer.noise_shapes().items()}
        generated = self._generated_from(layer)
        return {"sample_ex_post": (lambda n: generated(layer.draw_noise(n)), {"n": tf.TensorSpec([], tf.int32)}),
                "sample_from_noise_ex_post": (lambda **kw: generated(kw), noise)}

    def get_config(self):
        config = super().get_config()
        if self.ex_post_sampler is not None:
            config["ex_post_sampler"] = {"kind": self.ex_post_sampler_kind,
                                         "layer": keras.saving.serialize_keras_object(self.ex_post_sampler)}
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        sampler = config.pop("ex_post_sampler", None)
        model = super().from_config(config)
        if sampler:
            layer = keras.saving.deserialize_keras_object(sampler["layer"])
            if not layer.built:  # (deserialization builds a layer whose config holds its build config)
                layer.build()
            model.attach_sampler(layer, sampler["kind"])
        return model


@keras.saving.register_keras_serializable(package="vaezoo")
class BetaVAE(VAE):
    """beta-VAE: the ELBO with the KL weighted by beta, optionally capacity-controlled.

    Plain objective (Higgins et al. 2017), minimised per batch:

    .. math:: -\\mathbb{E}_q[\\log p(x|z)] + \\beta \\, \\mathrm{KL}(q(z|x) \\| p(z))

    With ``capacity_max > 0`` (Burgess et al. 2018) the KL is pulled towards a capacity C
    that rises linearly from 0 to ``capacity_max`` nats over ``capacity_steps`` optimizer steps:

    .. math:: -\\mathbb{E}_q[\\log p(x|z)] + \\gamma \\, |\\mathrm{KL}(q(z|x) \\| p(z)) - C|

    ``beta=1`` with no capacity is exactly the VAE objective. The ``elbo`` metric is always the
    unweighted ELBO.

    Args:
        beta: KL weight.
        capacity_max: final capacity C_max in nats (0 turns capacity control off).
        capacity_steps: optimizer steps over which C rises from 0 to C_max.
        gamma: weight of |KL - C|.
        **kwargs: as :class:`VAE`.
    """

    config_constraints = {"beta": cfg.NON_NEGATIVE, "capacity_max": cfg.NON_NEGATIVE,
                          "capacity_steps": cfg.AT_LEAST_1, "gamma": cfg.NON_NEGATIVE}

    def __init__(
        self,
        beta: float = 4.0,
        capacity_max: float = 0.0,
        capacity_steps: int = 100_000,
        gamma: float = 1000.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.beta = float(beta)
        self.capacity_max = float(capacity_max)
        self.capacity_steps = int(capacity_steps)
        self.gamma = float(gamma)

    def capacity(self, step=None):
        """C at optimizer step ``step`` (default: the current one): min(C_max, C_max * step / steps)."""
        if step is None:
            step = self.optimizer.iterations if self.optimizer is not None else self.capacity_steps
        fraction = tf.minimum(tf.cast(step, tf.float32) / float(self.capacity_steps), 1.0)
        return self.capacity_max * fraction

    def kl_coefficient(self):
        return self.beta * self.kl_weight

    def objective(self, terms):
        if self.capacity_max <= 0:
            return super().objective(terms)
        kl = tf.reduce_mean(terms["kl"])
        return tf.reduce_mean(terms["reconstruction"]) + self.kl_weight * self.gamma * tf.abs(kl - self.capacity())


# Registered names. Each takes its defaults from zoo_configs/<name>.yaml.
register_model(VAE, name="vae")
register_model(VAE, name="vae_conv")
register_model(VAE, name="vae_iaf")
register_model(VAE, name="vae_planar")
register_model(VAE, name="vae_radial")
register_model(VAE, name="vae_vamp")
register_model(VAE, name="vae_flow_prior")
register_model(BetaVAE, name="beta_vae")
register_model(BetaVAE, name="beta_vae_conv")
register_model(BetaVAE, name="beta_vae_conv64")  # 64x64 sprites, disentanglement_lib's architecture
