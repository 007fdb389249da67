"""VQ-VAE-2: two levels of vector-quantised codes, the bottom level conditioned on the top.

x -> bottom encoder -> h_b (1/2^downsample resolution) -> top encoder -> z_t (half of that) -> top codes q_t;
the top codes are decoded back to h_b's resolution and concatenated with h_b to give z_b -> bottom
codes q_b; the decoder sees both levels (the top one upsampled). Top codes hold global structure,
bottom codes local detail. Loss: reconstruction plus both levels' commitment (and codebook) terms.

Example:

>>> model = vaezoo.get("vq_vae2")               # 28x28 images: top 7x7 codes, bottom 14x14 codes
>>> top, bottom = model.encode(x)
>>> images = model.decode_indices(top, bottom)
>>> prior = vaezoo.get(model.prior_name, **model.prior_config())   # p(top) p(bottom | top)
>>> prior.fit(vaezoo.data.codes_dataset(model, images_ds))
>>> samples = model.sample(16, prior=prior)

Reference: Razavi, van den Oord & Vinyals, "Generating Diverse High-Fidelity Images with VQ-VAE-2",
NeurIPS 2019.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from vaezoo import config as cfg
from vaezoo.models.vqvae import VectorQuantizedVAE, _residual_stack
from vaezoo.registry import register_model
from vaezoo.vq import VectorQuantizer


@keras.saving.register_keras_serializable(package="vaezoo")
class VQVAE2(VectorQuantizedVAE):
    """Two-level VQ-VAE (top and bottom code maps, bottom conditioned on top).

    Args:
        downsample: stride-2 convolutions down to the bottom codes (28x28 -> 14x14 with 1);
            the top codes are half the bottom resolution.
        restart_after: restart codes unused for this many training steps, in both codebooks.
        bottom_num_codes: K of the bottom codebook (default ``num_codes``, the top's). A small one is meant to
            leave the bottom codes room for local detail only, so that the decoder reads the digit's identity from
            the top codes (docs/results.md, VQ-VAE-2 diagnosis: with 64 bottom codes it ignores them; not yet
            trained this way).
        top_reconstruction_weight: lambda of an auxiliary term lambda * -log p(x | top codes alone), the image
            decoded from the top codes by a decoder of their own (``top_only_decoder``, used in training only), as
            each level of Jukebox's hierarchy reconstructs the input by itself (Dhariwal et al. 2020). It makes the
            top codes hold the image's content even where the bottom codes could hold all of it (docs/results.md,
            VQ-VAE-2 diagnosis). 0 (default): no such decoder, the loss of Razavi et al.
        **kwargs: as :class:`vaezoo.models.vqvae.VectorQuantizedVAE`.

    References: Razavi, van den Oord & Vinyals 2019; Dhariwal, Jun, Payne, Kim, Radford & Sutskever, "Jukebox: A
    Generative Model for Music", 2020 (separately reconstructing levels).
    """

    ALL_METRICS = ("reconstruction", "commitment", "codebook", "top_reconstruction", "perplexity_top",
                   "perplexity_bottom", "codes_used_top", "codes_used_bottom")
    extra_levels = 1
    #: The registered prior over this model's codes, and the order of the maps ``encode`` returns.
    prior_name = "hierarchical_pixelcnn_prior"
    code_levels = ("top", "bottom")

    config_constraints = {**VectorQuantizedVAE.config_constraints, "bottom_num_codes": cfg.Range(2),
                          "top_reconstruction_weight": cfg.NON_NEGATIVE}

    def __init__(self, downsample: int = 1, restart_after: int = 5, bottom_num_codes: int | None = None,
                 top_reconstruction_weight: float = 0.0, **kwargs):
        # Set before the base init, which asks _unreported_metrics which trackers to build.
        self.top_reconstruction_weight = float(top_reconstruction_weight)
        super().__init__(downsample=downsample, restart_after=restart_after, **kwargs)
        self.bottom_num_codes = None if bottom_num_codes is None else int(bottom_num_codes)
        data_shape, seed = self.data_shape, self.seed
        c, r, n, d = self.hidden_channels, self.residual_channels, self.residual_blocks, self.code_dim
        hb, wb = data_shape[0] // 2**self.downsample, data_shape[1] // 2**self.downsample
        self.bottom_shape, self.top_shape = (hb, wb), (hb // 2, wb // 2)

        x = inputs = keras.Input(data_shape)
        for _ in range(self.downsample):
            x = keras.layers.Conv2D(c, 4, strides=2, padding="same", activation="relu")(x)
        x = keras.layers.Conv2D(c, 3, padding="same")(x)
        self.bottom_encoder = keras.Model(inputs, _residual_stack(x, c, r, n), name="bottom_encoder")

        x = inputs = keras.Input((hb, wb, c))
        x = keras.layers.Conv2D(c, 4, strides=2, padding="same", activation="relu")(x)
        x = keras.layers.Conv2D(c, 3, padding="same")(x)
        x = _residual_stack(x, c, r, n)
        self.top_encoder = keras.Model(inputs, keras.layers.Conv2D(d, 1)(x), name="top_encoder")

        # The top codes decoded to the bottom resolution: what the bottom level is conditioned on.
        x = inputs = keras.Input((*self.top_shape, d))
        x = keras.layers.Conv2D(c, 3, padding="same")(x)
        x = _residual_stack(x, c, r, n)
        self.top_decoder = keras.Model(
            inputs, keras.layers.Conv2DTranspose(d, 4, strides=2, padding="same")(x), name="top_decoder"
        )
        self.bottom_projection = keras.layers.Conv2D(d, 1, name="bottom_projection")

        bottom_in, top_in = keras.Input((hb, wb, d)), keras.Input((*self.top_shape, d))
        top_up = keras.layers.Conv2DTranspose(d, 4, strides=2, padding="same")(top_in)
        x = keras.layers.Concatenate()([bottom_in, top_up])
        x = keras.layers.Conv2D(c, 3, padding="same")(x)
        x = _residual_stack(x, c, r, n)
        for _ in range(self.downsample - 1):
            x = keras.layers.Conv2DTranspose(c, 4, strides=2, padding="same", activation="relu")(x)
        x = keras.layers.Conv2DTranspose(data_shape[2], 4, strides=2, padding="same")(x)
        self.decoder = keras.Model([bottom_in, top_in], x, name="decoder")

        self.top_only_decoder = None
        if self.top_reconstruction_weight > 0:
            x = inputs = keras.Input((*self.top_shape, d))
            x = keras.layers.Conv2D(c, 3, padding="same")(x)
            x = _residual_stack(x, c, r, n)
            for _ in range(self.downsample):
                x = keras.layers.Conv2DTranspose(c, 4, strides=2, padding="same", activation="relu")(x)
            x = keras.layers.Conv2DTranspose(data_shape[2], 4, strides=2, padding="same")(x)
            self.top_only_decoder = keras.Model(inputs, x, name="top_only_decoder")

        settings = self.quantizer_settings()
        seeds = (None, None) if seed is None else (seed, seed + 1)
        self.top_quantizer = VectorQuantizer(self.num_codes, d, seed=seeds[0], name="top_quantizer", **settings)
        self.bottom_quantizer = VectorQuantizer(self.bottom_codes, d, seed=seeds[1], name="bottom_quantizer",
                                                **settings)
        self.build((None, *data_shape))

    def _unreported_metrics(self):
        return () if self.top_reconstruction_weight > 0 else ("top_reconstruction",)

    def objective(self, terms):
        loss = super().objective(terms)
        if self.top_reconstruction_weight > 0:
            loss = loss + self.top_reconstruction_weight * tf.reduce_mean(terms["top_reconstruction"])
        return loss

    @property
    def bottom_codes(self) -> int:
        """K of the bottom codebook."""
        return self.bottom_num_codes or self.num_codes

    def build(self, input_shape=None):
        d = self.code_dim
        self.bottom_projection.build((None, *self.bottom_shape, self.hidden_channels + d))
        self.top_quantizer.build((None, *self.top_shape, d))
        self.bottom_quantizer.build((None, *self.bottom_shape, d))
        self.likelihood_layer.build(self.decoder.output_shape)
        self.built = True

    def _quantize(self, x, training):
        h_b = self.bottom_encoder(x, training=training)
        vq_t = self.top_quantizer(self.top_encoder(h_b, training=training), training=training)
        conditioned = tf.concat([h_b, self.top_decoder(vq_t["quantized"], training=training)], axis=-1)
        vq_b = self.bottom_quantizer(self.bottom_projection(conditioned), training=training)
        return vq_t, vq_b

    def compute_terms(self, x, training=False, seed=None, condition=None):
        x = self.check_inputs(x)
        vq_t, vq_b = self._quantize(x, training)
        px = self.likelihood_layer(self.decoder([vq_b["quantized"], vq_t["quantized"]], training=training))
        terms = {
            "reconstruction": -px.log_prob(x),
            "commitment": vq_t["commitment"] + vq_b["commitment"],
            "codebook": vq_t["codebook"] + vq_b["codebook"],
            "perplexity_top": vq_t["perplexity"],
            "perplexity_bottom": vq_b["perplexity"],
            "codes_used_top": vq_t["usage"],
            "codes_used_bottom": vq_b["usage"],
        }
        if self.top_only_decoder is not None:
            top_only = self.likelihood_layer(self.top_only_decoder(vq_t["quantized"], training=training))
            terms["top_reconstruction"] = -top_only.log_prob(x)
        return terms

    def call(self, inputs, training=False):
        """Reconstruction mean E[x|z_q]."""
        vq_t, vq_b = self._quantize(self.check_inputs(inputs), training=False)
        return self.likelihood_layer(self.decoder([vq_b["quantized"], vq_t["quantized"]])).mean()

    def encode(self, x):
        """Top and bottom code indices, int32 ``[B, *top_shape]`` and ``[B, *bottom_shape]``."""
        vq_t, vq_b = self._quantize(self.check_inputs(x), training=False)
        return vq_t["indices"], vq_b["indices"]

    def decode_indices(self, top, bottom):
        """Likelihood mean of the images with these top and bottom code maps."""
        return self.code_likelihood(top_codes=top, bottom_codes=bottom).mean()

    # ---- the hooks of VectorQuantizedVAE ------------------------------------------------------

    def prior_config(self) -> dict:
        return {"top_shape": list(self.top_shape), "bottom_shape": list(self.bottom_shape),
                "num_codes": self.num_codes, "bottom_num_codes": self.bottom_num_codes}

    def code_shapes(self):
        return {"top_codes": self.top_shape, "bottom_codes": self.bottom_shape}

    def code_sizes(self):
        return {"top_codes": self.num_codes, "bottom_codes": self.bottom_codes}

    def encode_codes(self, x):
        return dict(zip(("top_codes", "bottom_codes"), self.encode(x)))

    def code_likelihood(self, top_codes, bottom_codes):
        q_t = self.top_quantizer.lookup(tf.convert_to_tensor(top_codes, tf.int32))
        q_b = self.bottom_quantizer.lookup(tf.convert_to_tensor(bottom_codes, tf.int32))
        return self.likelihood_layer(self.decoder([q_b, q_t]))

    def prior_codes(self, prior, top_noise, bottom_noise):
        codes = prior.sample_from_noise(top_noise, bottom_noise)
        return {"top_codes": codes["top"], "bottom_codes": codes["bottom"]}

register_model(VQVAE2, name="vq_vae2")
