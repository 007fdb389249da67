"""VAEs with several stochastic layers: Burda et al.'s bottom-up two-layer models and the ladder VAE.

The generative model is a chain of L Gaussian layers (bottom first, z_1 next to the data):

.. math::

    p(x, z_{1..L}) = p(x | z_1) \\prod_{l=1}^{L-1} p(z_l | z_{l+1}) \\, p(z_L), \\qquad p(z_L) = N(0, I),
    \\quad p(z_l | z_{l+1}) = N(\\mu_l(z_{l+1}), \\mathrm{diag}\\,\\sigma_l^2(z_{l+1})).

Two inference models (``inference``):

* ``bottom_up`` (Burda et al. 2016, section 5): q(z_1|x) q(z_2|z_1) ... q(z_L|z_{L-1}), each a diagonal Gaussian
  from an MLP of the layer below (the sample, not its mean);
* ``top_down`` (the ladder VAE, Sonderby et al. 2016): a deterministic bottom-up pass d_l = MLP_l(d_{l-1})
  gives each layer its own estimate (mu-hat_l, sigma-hat_l); the top is q(z_L|x) = N(mu-hat_L, sigma-hat_L^2), and
  going down, the generative p(z_l|z_{l+1}) and the estimate are merged by precision weighting,

  .. math:: \\sigma_q^{-2} = \\hat\\sigma_l^{-2} + \\sigma_{p,l}^{-2}, \\qquad
            \\mu_q = \\sigma_q^2 (\\hat\\mu_l \\hat\\sigma_l^{-2} + \\mu_{p,l} \\sigma_{p,l}^{-2}),

  so that inference shares the generative model's top-down path (the small-scale ancestor of NVAE).

The top prior p(z_L) is N(0, I) or, with top-down inference (where q(z_L|x) = N(mu-hat_L(x), sigma-hat_L^2(x)) is in
closed form), the VampPrior (``prior: vamp``, Tomczak & Welling 2018): (1/K) sum_k q(z_L | u_k) at K learned
pseudo-inputs, the hierarchical VampPrior of their section 3.2 with the ladder's inference.

Either way the importance log-weights are log w = log p(x|z_1) + sum_l log p(z_l|z_{l+1}) - sum_l log q(z_l|.),
so the ELBO, the IWAE bound (``bound: iwae``) and the importance-sampled NLL (:mod:`vaezoo.evaluate`) come from
:mod:`vaezoo.bounds` unchanged. The KL warm-up weight multiplies every layer's log p - log q; each layer's
Monte-Carlo KL term E_q[log q(z_l|.) - log p(z_l|z_{l+1})] is a metric (``kl_1`` ... ``kl_L``).

The public API keeps the one-layer shapes where they have a meaning: ``latent_dim`` is the top layer's size,
``code(x)`` its posterior mean, ``decode(z)`` goes down the generative chain from a top code at the
conditional means, ``sample(n)`` is ancestral. ``encode(x)`` returns, by ``parameter_names``, the top layer's
``mean`` and ``log_variance`` and then every layer's ``mean_l`` and ``log_variance_l`` (l = 1 .. L), computed
in one deterministic pass where each layer's q is taken at the mean of the layer it depends on.
``reconstruct(x)`` decodes the posterior mean of z_1.

Example:

>>> import keras, vaezoo
>>> model = vaezoo.get("iwae_2layer")                 # x -> 200-200 -> z1 (100) -> 100-100 -> z2 (50), K = 5
>>> ladder = vaezoo.get("ladder_vae", latent_dims=[64, 32, 16], hidden_units=[[512, 512], [256, 256], [128, 128]])
>>> model.compile(keras.optimizers.Adam(1e-3, epsilon=1e-4))   # model.fit(...): loss, iwae_bound, elbo, kl_1, kl_2

References:
    Burda, Grosse & Salakhutdinov, "Importance Weighted Autoencoders", ICLR 2016 (the two-layer architecture).
    Sonderby, Raiko, Maaloe, Sonderby & Winther, "Ladder Variational Autoencoders", NeurIPS 2016.
    Vahdat & Kautz, "NVAE: A Deep Hierarchical Variational Autoencoder", NeurIPS 2020.
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf
import tensorflow_probability as tfp

from vaezoo import bounds, components
from vaezoo import config as cfg
from vaezoo import distribute
from vaezoo import layers as dl
from vaezoo.models.base import BaseVAE
from vaezoo.registry import register_model

tfd = tfp.distributions


def precision_weighted(mean_a, log_var_a, mean_b, log_var_b):
    """The product of two diagonal Gaussians, renormalised: ``(mean, log_var)`` of N(a) N(b) / Z
    (Sonderby et al. 2016, eq. 17-18): precisions add, the mean is the precision-weighted mean."""
    precision_a, precision_b = tf.exp(-log_var_a), tf.exp(-log_var_b)
    log_var = -tf.math.log(precision_a + precision_b)
    return tf.exp(log_var) * (mean_a * precision_a + mean_b * precision_b), log_var


def _gaussian(mean, log_var):
    return tfd.Independent(tfd.Normal(mean, tf.exp(0.5 * log_var)), reinterpreted_batch_ndims=1)


def _mlp(units, activation, name):
    """Dense layers of these widths (no widths: the identity, a linear stochastic layer)."""
    stack = [keras.layers.Dense(u, activation=activation) for u in units] or [keras.layers.Identity()]
    return keras.Sequential(stack, name=name)


@keras.saving.register_keras_serializable(package="vaezoo")
class HierarchicalVAE(BaseVAE):
    """A VAE with L stochastic layers, bottom-up or top-down (ladder) inference, trained on the ELBO or the
    K-sample IWAE bound (see the module docstring).

    Args:
        data_shape: shape of one example.
        latent_dims: sizes of z_1 .. z_L, bottom first (Burda et al.: 100, 50).
        hidden_units: one list of widths per layer: the MLP from x (layer 1) or from the layer below to layer l;
            the generative MLPs mirror them (p(z_{l-1}|z_l) and p(x|z_1) use layer l's widths reversed).
        activation: hidden activation (Burda et al.: tanh).
        likelihood: one of :data:`vaezoo.layers.LIKELIHOODS`.
        likelihood_scale: sigma of a Gaussian likelihood.
        inference: ``"bottom_up"`` or ``"top_down"`` (ladder).
        bound: ``"elbo"`` or ``"iwae"`` (the training objective).
        num_samples: K, samples per example in the bound.
        prior: ``"normal"`` or ``"vamp"`` (the top layer's prior; ``vamp`` needs ``inference: top_down``).
        num_pseudo_inputs: pseudo-inputs of the ``vamp`` prior.
        pseudo_inputs: ``"direct"`` or ``"network"`` (see :class:`vaezoo.layers.VampPrior`).
        warmup_steps: KL warm-up (Sonderby et al. 2016): the weight of every layer's log p - log q rises linearly
            from 0 to 1 over this many optimizer steps, inside the train step (0: off; the same schedule as
            :class:`vaezoo.callbacks.KLWarmup`, which may also be used).
        seed: sampling seed.
    """

    INFERENCE = ("bottom_up", "top_down")
    BOUNDS = ("elbo", "iwae")
    config_constraints = {
        "data_shape": cfg.AT_LEAST_1,
        "latent_dims": cfg.AT_LEAST_1,
        "activation": cfg.OneOf(("relu", "tanh", "elu", "gelu", "silu", "softplus")),
        "likelihood": dl.LIKELIHOODS.choice(),
        **components.constraints(dl.LIKELIHOODS),
        "inference": cfg.OneOf(INFERENCE),
        "bound": cfg.OneOf(BOUNDS),
        "num_samples": cfg.AT_LEAST_1,
        "warmup_steps": cfg.NON_NEGATIVE,
        "prior": cfg.OneOf(("normal", "vamp")),
        "num_pseudo_inputs": cfg.AT_LEAST_1,
        "pseudo_inputs": cfg.OneOf(dl.VampPrior.MODES),
    }
    fuse_steps = True

    def __init__(self, data_shape: tuple[int, ...] = (28, 28, 1), latent_dims: tuple[int, ...] = (100, 50),
                 hidden_units: tuple[list[int], ...] = ([200, 200], [100, 100]),
                 activation: str = "tanh", likelihood: str = "bernoulli", likelihood_scale: float = 1.0,
                 inference: str = "bottom_up", bound: str = "elbo", num_samples: int = 1, warmup_steps: int = 0,
                 prior: str = "normal", num_pseudo_inputs: int = 500, pseudo_inputs: str = "direct", seed=None,
                 **kwargs):
        self.latent_dims = tuple(int(d) for d in latent_dims)
        hidden = [tuple(int(u) for u in layer) for layer in hidden_units]
        if len(hidden) != len(self.latent_dims) or any(u < 1 for layer in hidden for u in layer):
            raise cfg.ConfigError(
                f"hidden_units must give one list of widths (>= 1) per stochastic layer: {len(self.latent_dims)} "
                f"for latent_dims={list(self.latent_dims)}, got {[list(h) for h in hidden]}.")
        self.hidden_units = tuple(hidden)
        layers_ = len(self.latent_dims)
        names = ["elbo", "reconstruction", "kl", *[f"kl_{l}" for l in range(1, layers_ + 1)]]
        self.metric_names = tuple((["iwae_bound"] if bound == "iwae" else []) + names)
        super().__init__(data_shape=data_shape, seed=seed, **kwargs)
        self.activation = activation
        self.likelihood = likelihood
        self.likelihood_scale = float(likelihood_scale)
        self.inference = inference
        self.bound = bound
        self.num_samples = int(num_samples)
        self.warmup_steps = int(warmup_steps)
        if self.warmup_steps:
            self.kl_warmup_steps.assign(float(self.warmup_steps))
        self.prior = prior
        self.num_pseudo_inputs = int(num_pseudo_inputs)
        self.pseudo_inputs = pseudo_inputs
        if prior == "vamp" and inference != "top_down":
            raise cfg.ConfigError(
                "prior 'vamp' is a mixture of q(z_L | pseudo-input), which only top-down inference has in closed form: "
                f"set inference='top_down' (ladder_vae), or prior='normal' (got inference={inference!r}).")
        self.latent_dim = self.latent_dims[-1]
        self.parameter_names = ("mean", "log_variance", *[f"{n}_{l}" for l in range(1, layers_ + 1)
                                                          for n in ("mean", "log_variance")])
        d = self.latent_dims
        # Inference: an MLP and a Gaussian head per layer (from x / the layer below, or the deterministic path).
        self.up = [_mlp(self.hidden_units[l], activation, f"up_{l + 1}") for l in range(layers_)]
        self.up_heads = [keras.layers.Dense(2 * d[l], name=f"q_{l + 1}") for l in range(layers_)]
        # Generative: p(z_l | z_{l+1}) for l < L, and p(x | z_1).
        self.down = [_mlp(tuple(reversed(self.hidden_units[l + 1])), activation, f"down_{l + 1}")
                     for l in range(layers_ - 1)]
        self.down_heads = [keras.layers.Dense(2 * d[l], name=f"p_{l + 1}") for l in range(layers_ - 1)]
        self.decoder = keras.Sequential(
            [*[keras.layers.Dense(u, activation=activation) for u in reversed(self.hidden_units[0])],
             keras.layers.Dense(math.prod(self.data_shape)), keras.layers.Reshape(self.data_shape)], name="decoder")
        self.likelihood_layer = dl.LIKELIHOODS.build(likelihood, {"likelihood_scale": self.likelihood_scale},
                                                     name="likelihood")
        if prior == "vamp":
            self.prior_layer = dl.VampPrior(d[-1], data_shape=self.data_shape, num_components=self.num_pseudo_inputs,
                                            pseudo_inputs=pseudo_inputs, seed=seed, name="prior")
            # q(z_L | u) from the deterministic pass; the Gaussian layer only lends its distribution methods.
            self.prior_layer.bind(lambda u: self._bottom_up_estimates(u)[-1],
                                  dl.DiagonalGaussianPosterior(d[-1], name="top_posterior"))
        else:
            self.prior_layer = dl.StandardNormalPrior(d[-1], name="prior")
        self.build((None, *self.data_shape))

    def build(self, input_shape=None):
        d = self.latent_dims
        width = math.prod(self.data_shape)
        for l in range(len(d)):
            self.up[l].build((None, width))
            width = self.hidden_units[l][-1] if self.hidden_units[l] else width
            self.up_heads[l].build((None, width))
            if self.inference == "bottom_up":
                width = d[l]  # the next layer reads the sample z_l
        for l in range(len(d) - 1):
            self.down[l].build((None, d[l + 1]))
            self.down_heads[l].build((None, self.hidden_units[l + 1][0] if self.hidden_units[l + 1] else d[l + 1]))
        self.decoder.build((None, d[0]))
        self.likelihood_layer.build(self.decoder.output_shape)
        self.prior_layer.build()
        self.built = True

    # ---- the layers' distributions -------------------------------------------------------------

    @staticmethod
    def _split(h):
        half = h.shape[-1] // 2
        return h[..., :half], h[..., half:]

    def conditional_prior(self, l: int, z_above):
        """(mean, log_var) of p(z_l | z_{l+1}) (l counts from 1, l < L) for samples ``[..., d_{l+1}]``."""
        return self._split(self._apply_two(self.down[l - 1], self.down_heads[l - 1], z_above))

    def _apply_two(self, mlp, head, x):
        """head(mlp(x)) on ``[..., F]`` inputs (any leading sample axes)."""
        lead = tf.shape(x)[:-1]
        out = tf.cast(head(mlp(tf.reshape(x, [-1, x.shape[-1]]))), tf.float32)  # float32 also under mixed precision
        return tf.reshape(out, tf.concat([lead, [out.shape[-1]]], 0))

    def _flat(self, x):
        return tf.reshape(x, [-1, math.prod(self.data_shape)])

    def _bottom_up_estimates(self, x):
        """Top-down inference's deterministic pass: each layer's (mu-hat, log sigma-hat^2), ``[B, d_l]``."""
        h, out = self._flat(x), []
        for l in range(len(self.latent_dims)):
            h = self.up[l](h)
            out.append(self._split(tf.cast(self.up_heads[l](h), tf.float32)))
        return out

    def _infer(self, x, noise=None):
        """Walk the inference model: z_l ``[K, B, d_l]`` from noise (or the means when ``noise`` is None, with
        a sample axis of 1) and each layer's q parameters; returns ``(z, q_params)`` lists bottom first."""
        layers_ = len(self.latent_dims)
        z, params = [None] * layers_, [None] * layers_

        def draw(l, mean, log_var):
            return mean + tf.exp(0.5 * log_var) * noise[l] if noise is not None else mean + 0.0 * log_var

        if self.inference == "bottom_up":
            below = self._flat(x)[None]
            for l in range(layers_):
                mean, log_var = self._split(self._apply_two(self.up[l], self.up_heads[l], below))
                params[l] = (mean, log_var)
                z[l] = below = draw(l, mean, log_var)
        else:
            estimates = self._bottom_up_estimates(x)
            for l in reversed(range(layers_)):
                mean, log_var = estimates[l][0][None], estimates[l][1][None]
                if l < layers_ - 1:
                    mean, log_var = precision_weighted(mean, log_var, *self.conditional_prior(l + 1, z[l + 1]))
                params[l] = (mean, log_var)
                z[l] = draw(l, mean, log_var)
        return z, params

    def posterior_noise(self, num_samples: int, batch_size, seed):
        """Standard normal noise per layer ``[K, B, d_l]`` (by example: the same under any tf.distribute split)."""
        seed = self.next_seed(seed)
        return [distribute.replica_rows(
            lambda batch, l=l: tf.random.stateless_normal(tf.stack([num_samples, batch, d]),
                                                          tf.random.experimental.stateless_fold_in(seed, l)),
            batch_size, axis=1) for l, d in enumerate(self.latent_dims)]

    def likelihood_distribution(self, z1, training=False):
        """p(x|z_1) for z_1 ``[..., d_1]``."""
        z1 = tf.cast(z1, tf.float32)
        lead = tf.shape(z1)[:-1]
        params = tf.cast(self.decoder(tf.reshape(z1, [-1, self.latent_dims[0]]), training=training), tf.float32)
        return self.likelihood_layer(tf.reshape(params, tf.concat([lead, self.data_shape], 0)))

    def layer_log_probs(self, x, num_samples: int, seed=None):
        """Draw K samples of every layer from q and return ``(log p(x|z_1), [log p(z_l|z_{l+1})], [log q(z_l|.)],
        z, q_params)``, the log-densities ``[K, B]`` each, layers bottom first."""
        noise = self.posterior_noise(num_samples, tf.shape(x)[0], seed)
        z, params = self._infer(x, noise)
        layers_ = len(self.latent_dims)
        log_q = [_gaussian(*params[l]).log_prob(z[l]) for l in range(layers_)]
        log_p = []
        for l in range(layers_):
            if l == layers_ - 1:
                log_p.append(self.prior_layer.log_prob(z[l]))
            else:
                log_p.append(_gaussian(*self.conditional_prior(l + 1, z[l + 1])).log_prob(z[l]))
        log_px = self.likelihood_distribution(z[0]).log_prob(x)
        return log_px, log_p, log_q, z, params

    def log_weights(self, x, num_samples: int, seed=None):
        """Importance log-weights log p(x|z_1) + sum_l [log p(z_l|z_{l+1}) - log q(z_l|.)], ``[K, B]``."""
        x = self.check_inputs(x)
        log_px, log_p, log_q, _, _ = self.layer_log_probs(x, num_samples, seed=self.next_seed(seed))
        return bounds.log_weights(log_px, tf.add_n(log_p), tf.add_n(log_q))

    # ---- the bound -----------------------------------------------------------------------------

    def compute_terms(self, x, training=False, seed=None, condition=None):
        x = self.check_inputs(x)
        log_px, log_p, log_q, z, params = self.layer_log_probs(x, self.num_samples, seed=self.next_seed(seed))
        kls = [tf.reduce_mean(q - p, axis=0) for q, p in zip(log_q, log_p)]
        reconstruction = -tf.reduce_mean(log_px, axis=0)
        kl = tf.add_n(kls)
        terms = {"elbo": -(reconstruction + kl), "reconstruction": reconstruction, "kl": kl,
                 **{f"kl_{l + 1}": k for l, k in enumerate(kls)}, "log_px": log_px,
                 "log_pz": tf.add_n(log_p), "log_qz": tf.add_n(log_q), "z": z[-1]}
        terms["log_w"] = bounds.log_weights(log_px, terms["log_pz"], terms["log_qz"], self.kl_weight)
        if self.bound == "iwae":
            terms["iwae_bound"] = bounds.iwae_bound(terms["log_w"])
        return terms

    def objective(self, terms):
        if self.bound == "iwae":
            return -tf.reduce_mean(terms["iwae_bound"])
        return tf.reduce_mean(terms["reconstruction"]) + self.kl_weight * tf.reduce_mean(terms["kl"])

    # ---- public API ----------------------------------------------------------------------------

    def encode(self, x):
        """The top layer's ``mean`` and ``log_variance``, then ``mean_l``, ``log_variance_l`` for l = 1 .. L
        (``parameter_names``), from one pass at the means, each ``[B, d_l]``."""
        x = self.check_inputs(x)
        _, params = self._infer(x)
        flat = [t[0] for layer in params for t in layer]
        return (params[-1][0][0], params[-1][1][0], *flat)

    def code(self, x):
        """The top layer's posterior mean ``[B, latent_dim]``."""
        return self.encode(x)[0]

    def descend(self, z_top, noise=None):
        """z_1 from a top code ``[B, d_L]``: down the generative chain at the conditional means, or with
        standard normal ``noise`` (a list for layers 1 .. L-1) for an ancestral sample."""
        z = tf.cast(z_top, tf.float32)
        for l in reversed(range(len(self.latent_dims) - 1)):
            mean, log_var = self.conditional_prior(l + 1, z)
            z = mean if noise is None else mean + tf.exp(0.5 * log_var) * noise[l]
        return z

    def decode(self, z):
        """E[x | z_1] with z_1 reached from the top code ``z`` ``[B, latent_dim]`` at the conditional means."""
        z = tf.convert_to_tensor(z, tf.float32)
        if z.shape.rank != 2 or z.shape[-1] not in (None, self.latent_dim):
            raise ValueError(f"{self.name} decodes top-layer codes of width latent_dim={self.latent_dim} (shape "
                             f"(batch, {self.latent_dim})), got z of shape {tuple(z.shape)}.")
        return self.likelihood_distribution(self.descend(z)).mean()

    def call(self, inputs, training=False):
        return self.reconstruct(inputs)

    def reconstruct(self, x):
        """E[x | z_1 = the posterior mean of z_1]."""
        x = self.check_inputs(x)
        _, params = self._infer(x)
        return self.likelihood_distribution(params[0][0][0]).mean()

    def _lower(self):
        return [f"noise_{l + 1}" for l in range(len(self.latent_dims) - 1)]

    def noise_shapes(self):
        """The noise of an ancestral sample: the top prior's (``noise`` [d_L], and ``component_noise`` [] for the
        VampPrior), then ``noise_l`` [d_l] for l < L."""
        return {**self.prior_layer.noise_shapes(), **{k: (d,) for k, d in zip(self._lower(), self.latent_dims)}}

    def draw_noise(self, n, seed=None) -> dict:
        """Noise for ``n`` ancestral samples (stateless from ``seed``, else from TF's global generator)."""
        out = self.prior_layer.draw_noise(n, None if seed is None else tf.random.experimental.stateless_fold_in(seed, 0))
        for i, (key, d) in enumerate(zip(self._lower(), self.latent_dims)):
            shape = tf.stack([tf.convert_to_tensor(n, tf.int32), d])
            out[key] = (tf.random.normal(shape) if seed is None
                        else tf.random.stateless_normal(shape, tf.random.experimental.stateless_fold_in(seed, i + 1)))
        return out

    def _ancestral(self, noise):
        top = self.prior_layer.from_noise(**{k: noise[k] for k in self.prior_layer.noise_shapes()})
        lower = [tf.convert_to_tensor(noise[k], tf.float32) for k in self._lower()]
        return top, self.likelihood_distribution(self.descend(top, lower))

    def sample_from_noise(self, **noise):
        """E[x|z_1] of the ancestral sample: z_L from the top prior's noise, z_l = mu_l + sigma_l ``noise_l``."""
        return self._ancestral(noise)[1].mean()

    def sample(self, n: int, seed=None, mean: bool = True):
        """``n`` ancestral samples: E[x|z_1] (``mean=True``) or x ~ p(x|z_1)."""
        n = self.check_count(n)
        seed = self.next_seed(seed)
        px = self._ancestral(self.draw_noise(n, seed))[1]
        return px.mean() if mean else px.sample(seed=tf.reverse(seed, [0]))

    def elbo(self, x, seed=None):
        """ELBO estimate per example, ``[B]``."""
        return self.compute_terms(x, seed=seed)["elbo"]

    def endpoints(self):
        """The one-layer VAE's signatures: ``serving_default``, ``encode`` (every layer's statistics by name),
        ``decode`` (a top code), ``sample``, ``sample_from_noise`` (one noise input per layer) and ``elbo``."""
        f32 = tf.float32
        images = {"images": tf.TensorSpec([None, *self.data_shape], f32)}
        noise = {k: tf.TensorSpec([None, *shape], f32) for k, shape in self.noise_shapes().items()}

        def generated(noise):
            top, px = self._ancestral(noise)
            return {"images": px.mean(), "z": top}

        def bound(images, seed):
            terms = self.compute_terms(images, training=False, seed=seed)
            return {k: terms[k] for k in self.metric_names}

        return {
            "serving_default": (lambda images: {"reconstruction": self.reconstruct(images)}, images),
            "encode": (lambda images: dict(zip(self.parameter_names, self.encode(images))), images),
            "decode": (lambda z: {"images": self.decode(z)}, {"z": tf.TensorSpec([None, self.latent_dim], f32)}),
            "sample": (lambda n: generated(self.draw_noise(n)), {"n": tf.TensorSpec([], tf.int32)}),
            "sample_from_noise": (lambda **kw: generated(kw), noise),
            "elbo": (bound, {**images, "seed": tf.TensorSpec([2], tf.int32)}),
        }

    def get_config(self):
        config = super().get_config()
        config["hidden_units"] = [list(h) for h in self.hidden_units]
        return config


register_model(HierarchicalVAE, name="vae_2layer")
register_model(HierarchicalVAE, name="iwae_2layer")
register_model(HierarchicalVAE, name="ladder_vae")
