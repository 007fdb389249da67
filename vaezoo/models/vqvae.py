"""VQ-VAE: a convolutional autoencoder with a vector-quantised (discrete) latent code map.

x -> encoder (stride-2 convolutions, residual blocks) -> z_e [h, w, D] -> nearest codes e_k
-> decoder (residual blocks, transposed convolutions) -> p(x|z_q). The loss is

.. math:: -\\log p(x|z_q) + \\|sg[z_e] - e\\|^2 + \\beta \\|z_e - sg[e]\\|^2

(the codebook term is dropped when the codebook is updated by EMA). With a uniform prior over
codes the KL term of the ELBO is the constant h w log K, so it is not optimised.

Example:

>>> import keras, vaezoo
>>> model = vaezoo.get("vq_vae")                 # 28x28 images -> 7x7 map of codes
>>> model.compile(keras.optimizers.Adam(2e-4))
>>> # model.fit(dataset)   # metrics: loss, reconstruction, commitment, perplexity, codes_used
>>> codes = model.encode(x)                      # int32 [B, 7, 7]
>>> images = model.decode_indices(codes)

Reference: van den Oord, Vinyals & Kavukcuoglu, "Neural Discrete Representation Learning",
NeurIPS 2017.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from vaezoo import config as cfg
from vaezoo import layers as dl
from vaezoo.models.base import BaseVAE
from vaezoo.registry import register_model
from vaezoo.vq import VectorQuantizer


def _residual_stack(h, channels: int, residual_channels: int, blocks: int):
    """The paper's residual blocks: x + conv1x1(relu(conv3x3(relu(x)))), then a final ReLU."""
    for _ in range(blocks):
        r = keras.layers.ReLU()(h)
        r = keras.layers.Conv2D(residual_channels, 3, padding="same", activation="relu")(r)
        r = keras.layers.Conv2D(channels, 1)(r)
        h = keras.layers.Add()([h, r])
    return keras.layers.ReLU()(h)


class VectorQuantizedVAE(BaseVAE):
    """What the vector-quantised families share: arguments, checks, likelihood, loss and config.

    Args:
        data_shape: ``(height, width, channels)``; height and width divisible by
            ``2 ** (downsample + extra_levels)``.
        hidden_channels: channels of the convolutions.
        residual_channels: channels inside each residual block.
        residual_blocks: residual blocks in each encoder and decoder stack.
        downsample: stride-2 convolutions from the image down to the (first) code map.
        num_codes: K, codebook size.
        code_dim: D, dimension of each code.
        beta: commitment weight.
        ema: EMA codebook updates (else the codebook loss trains it).
        decay: EMA decay.
        restart_after: restart codes unused for this many training steps (0: never).
        likelihood: one of :data:`vaezoo.layers.LIKELIHOODS`.
        likelihood_scale: sigma of a Gaussian likelihood.
        seed: seed of sampling, codebook initialisation and restarts.
    """

    ALL_METRICS: tuple[str, ...] = ()
    #: Both families train faster without XLA on a CPU (docs/results.md, training throughput, run D: vq_vae 2327
    #: against 1715 examples/s, every round 1.3-1.5x; vq_vae2 run A).
    xla_by_default = False
    config_constraints = {
        "data_shape": cfg.AT_LEAST_1,
        "hidden_channels": cfg.AT_LEAST_1,
        "residual_channels": cfg.AT_LEAST_1,
        "residual_blocks": cfg.NON_NEGATIVE,
        "downsample": cfg.AT_LEAST_1,
        "num_codes": cfg.Range(2),
        "code_dim": cfg.AT_LEAST_1,
        "beta": cfg.NON_NEGATIVE,
        "decay": cfg.Range(0, 1, high_open=True),
        "restart_after": cfg.NON_NEGATIVE,
        "likelihood": dl.LIKELIHOODS.choice(),
        "likelihood_scale": cfg.POSITIVE,
    }
    #: Stride-2 levels below ``downsample`` (VQ-VAE-2's top codes add one).
    extra_levels = 0

    def __init__(
        self,
        data_shape: tuple[int, ...] = (28, 28, 1),
        hidden_channels: int = 64,
        residual_channels: int = 32,
        residual_blocks: int = 2,
        downsample: int = 2,
        num_codes: int = 64,
        code_dim: int = 16,
        beta: float = 0.25,
        ema: bool = True,
        decay: float = 0.99,
        restart_after: int = 0,
        likelihood: str = "bernoulli",
        likelihood_scale: float = 1.0,
        seed: int | None = None,
        **kwargs,
    ):
        data_shape = tuple(int(d) for d in data_shape)
        factor = 2 ** (downsample + self.extra_levels)
        if len(data_shape) != 3 or data_shape[0] % factor or data_shape[1] % factor or downsample < 1:
            raise ValueError(
                f"{type(self).__name__} needs data_shape (height, width, channels) with height and width divisible "
                f"by {factor} (downsample >= 1), got data_shape {data_shape}, downsample {downsample}."
            )
        # Gradient-free (EMA) codebooks have no codebook loss to report; a family may leave out others.
        self.metric_names = tuple(m for m in self.ALL_METRICS
                                  if not (ema and m == "codebook") and m not in self._unreported_metrics())
        super().__init__(data_shape=data_shape, seed=seed, **kwargs)
        self.hidden_channels = int(hidden_channels)
        self.residual_channels = int(residual_channels)
        self.residual_blocks = int(residual_blocks)
        self.downsample = int(downsample)
        self.num_codes = int(num_codes)
        self.code_dim = int(code_dim)
        self.beta = float(beta)
        self.ema = bool(ema)
        self.decay = float(decay)
        self.restart_after = int(restart_after)
        self.likelihood = likelihood
        self.likelihood_scale = float(likelihood_scale)
        self.likelihood_layer = dl.make_likelihood(likelihood, self.likelihood_scale)

    def _unreported_metrics(self) -> tuple[str, ...]:
        """Names of ``ALL_METRICS`` this instance does not compute (called before the base initialiser)."""
        return ()

    def quantizer_settings(self) -> dict:
        """Keyword arguments of this model's :class:`VectorQuantizer` layers."""
        return dict(beta=self.beta, ema=self.ema, decay=self.decay, restart_after=self.restart_after)

    def objective(self, terms):
        return tf.reduce_mean(terms["reconstruction"] + terms["commitment"] + terms["codebook"])

    # ---- codes: what each family defines ------------------------------------------------------

    #: The registered prior over this family's codes (see :meth:`prior_config`).
    prior_name = ""

    def prior_config(self) -> dict:
        """Config keys that tie a prior (``vaezoo.get(self.prior_name, ...)``) to this model's codes."""
        raise NotImplementedError

    def code_shapes(self) -> dict[str, tuple[int, int]]:
        """Per-example shape of each code map, by the name the exported signatures use."""
        raise NotImplementedError

    def encode_codes(self, x) -> dict[str, tf.Tensor]:
        """:meth:`encode` as a dict keyed like :meth:`code_shapes`."""
        raise NotImplementedError

    def code_likelihood(self, **codes):
        """p(x | code maps), the maps passed by the names of :meth:`code_shapes`."""
        raise NotImplementedError

    def prior_codes(self, prior, **noise) -> dict[str, tf.Tensor]:
        """Code maps that ``prior`` draws from uniform noise (names: :meth:`noise_names`)."""
        raise NotImplementedError

    # ---- codes: shared ------------------------------------------------------------------------

    def check_prior(self, prior) -> None:
        """Raise unless ``prior`` models this model's code maps (same shapes and number of codes)."""
        mine = self.prior_config()
        theirs = {k: getattr(prior, k, None) for k in mine}
        theirs = {k: list(v) if isinstance(v, tuple) else v for k, v in theirs.items()}
        if theirs != mine:
            raise ValueError(
                f"The prior {type(prior).__name__} models codes {theirs}; this {type(self).__name__} has {mine} "
                f"(train a {self.prior_name!r} on its codes)."
            )

    def code_sizes(self) -> dict[str, int]:
        """Code map name -> K, the number of codes of its codebook."""
        return {name: self.num_codes for name in self.code_shapes()}

    def noise_names(self) -> dict[str, str]:
        """Code map name -> the name of the uniform noise it is drawn from (``codes`` -> ``noise``)."""
        return {name: name.replace("codes", "noise") for name in self.code_shapes()}

    def codes_from_noise(self, prior=None, **noise) -> dict[str, tf.Tensor]:
        """Code maps from uniform noise in [0, 1) (one number per code, named by :meth:`noise_names`).

        With a trained ``prior`` the codes are its inverse-CDF draws, position by position; without
        one they are uniform, floor(u K): the VQ-VAE's own prior.
        """
        if prior is not None:
            self.check_prior(prior)
            return self.prior_codes(prior, **noise)
        sizes = self.code_sizes()
        return {c: tf.minimum(tf.cast(tf.convert_to_tensor(noise[u], tf.float32) * sizes[c], tf.int32), sizes[c] - 1)
                for c, u in self.noise_names().items()}

    def sample(self, n: int, seed=None, mean: bool = True, prior=None):
        """``n`` images decoded from code maps drawn from ``prior`` (the family's trained prior over
        codes, see :attr:`prior_name`); without one the codes are uniform, which gives no realistic
        samples. ``mean=False`` draws x ~ p(x | codes) instead of its mean."""
        n = self.check_count(n)
        seed = self.next_seed(seed)
        noise = {u: tf.random.stateless_uniform([n, *self.code_shapes()[c]], seed + i)
                 for i, (c, u) in enumerate(self.noise_names().items())}
        px = self.code_likelihood(**self.codes_from_noise(prior, **noise))
        return px.mean() if mean else px.sample(seed=tf.reverse(seed, [0]))

    def endpoints(self, prior=None):
        """``serving_default`` (reconstruction), ``encode`` (code maps), ``decode`` (from code maps),
        ``sample`` (from n) and ``sample_from_noise`` (uniform noise per code); the two sampling
        signatures draw codes from ``prior`` when one is given (it is exported with the model)."""
        if prior is not None:
            self.check_prior(prior)
        shapes, names = self.code_shapes(), self.noise_names()
        images = {"images": tf.TensorSpec([None, *self.data_shape], tf.float32)}

        def generated(noise):
            codes = self.codes_from_noise(prior, **noise)
            return {"images": self.code_likelihood(**codes).mean(), **codes}

        def draw(n):
            return {names[c]: tf.random.uniform(tf.stack([n, *shape])) for c, shape in shapes.items()}

        return {
            "serving_default": (lambda images: {"reconstruction": self.reconstruct(images)}, images),
            "encode": (lambda images: self.encode_codes(images), images),
            "decode": (lambda **codes: {"images": self.code_likelihood(**codes).mean()},
                       {c: tf.TensorSpec([None, *shape], tf.int32) for c, shape in shapes.items()}),
            "sample": (lambda n: generated(draw(n)), {"n": tf.TensorSpec([], tf.int32)}),
            "sample_from_noise": (lambda **noise: generated(noise),
                                  {names[c]: tf.TensorSpec([None, *shape], tf.float32) for c, shape in shapes.items()}),
        }

    def reconstruct(self, x):
        """Decode the codes of x."""
        return self(x, training=False)


@keras.saving.register_keras_serializable(package="vaezoo")
class VQVAE(VectorQuantizedVAE):
    """Vector-quantised VAE (one level of codes).

    Args:
        downsample: stride-2 convolutions (28x28 -> 7x7 with 2).
        **kwargs: as :class:`VectorQuantizedVAE`.
    """

    ALL_METRICS = ("reconstruction", "commitment", "codebook", "perplexity", "codes_used")
    prior_name = "pixelcnn_prior"

    def __init__(self, downsample: int = 2, **kwargs):
        super().__init__(downsample=downsample, **kwargs)
        data_shape, factor = self.data_shape, 2**self.downsample
        self.code_shape = (data_shape[0] // factor, data_shape[1] // factor)

        x = inputs = keras.Input(data_shape)
        for _ in range(self.downsample):
            x = keras.layers.Conv2D(self.hidden_channels, 4, strides=2, padding="same", activation="relu")(x)
        x = keras.layers.Conv2D(self.hidden_channels, 3, padding="same")(x)
        x = _residual_stack(x, self.hidden_channels, self.residual_channels, self.residual_blocks)
        self.encoder = keras.Model(inputs, keras.layers.Conv2D(self.code_dim, 1)(x), name="encoder")

        x = inputs = keras.Input((*self.code_shape, self.code_dim))
        x = keras.layers.Conv2D(self.hidden_channels, 3, padding="same")(x)
        x = _residual_stack(x, self.hidden_channels, self.residual_channels, self.residual_blocks)
        for _ in range(self.downsample - 1):
            x = keras.layers.Conv2DTranspose(self.hidden_channels, 4, strides=2, padding="same", activation="relu")(x)
        x = keras.layers.Conv2DTranspose(data_shape[2], 4, strides=2, padding="same")(x)
        self.decoder = keras.Model(inputs, x, name="decoder")

        self.quantizer = VectorQuantizer(
            self.num_codes, self.code_dim, seed=self.seed, name="quantizer", **self.quantizer_settings()
        )
        self.build((None, *data_shape))

    def build(self, input_shape=None):
        self.quantizer.build(self.encoder.output_shape)
        self.likelihood_layer.build(self.decoder.output_shape)
        self.built = True

    # ---- the loss ----------------------------------------------------------------------------

    def compute_terms(self, x, training=False, seed=None, condition=None):
        x = self.check_inputs(x)
        vq = self.quantizer(self.encoder(x, training=training), training=training)
        px = self.likelihood_layer(self.decoder(vq["quantized"], training=training))
        return {
            "reconstruction": -px.log_prob(x),
            "commitment": vq["commitment"],
            "codebook": vq["codebook"],
            "perplexity": vq["perplexity"],
            "codes_used": vq["usage"],
        }

    # ---- public API --------------------------------------------------------------------------

    def call(self, inputs, training=False):
        """Reconstruction mean E[x|z_q]."""
        z_q = self.quantizer(self.encoder(self.check_inputs(inputs), training=training), training=False)["quantized"]
        return self.likelihood_layer(self.decoder(z_q, training=training)).mean()

    def encode(self, x):
        """Code indices, int32 ``[B, h, w]``."""
        return self.quantizer.indices(self.encoder(self.check_inputs(x)))

    def decode_indices(self, indices):
        """Likelihood mean of the images whose code maps are ``indices`` (``[B, h, w]``)."""
        return self.code_likelihood(codes=indices).mean()

    # ---- the hooks of VectorQuantizedVAE ------------------------------------------------------

    def prior_config(self) -> dict:
        return {"code_shape": list(self.code_shape), "num_codes": self.num_codes}

    def code_shapes(self):
        return {"codes": self.code_shape}

    def encode_codes(self, x):
        return {"codes": self.encode(x)}

    def code_likelihood(self, codes):
        return self.likelihood_layer(self.decoder(self.quantizer.lookup(tf.convert_to_tensor(codes, tf.int32))))

    def prior_codes(self, prior, noise):
        return {"codes": prior.sample_from_noise(noise)}

register_model(VQVAE, name="vq_vae")
