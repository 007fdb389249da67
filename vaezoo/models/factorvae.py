"""FactorVAE: the VAE plus a total-correlation penalty estimated by a discriminator.

FactorVAE (Kim & Mnih 2018) minimises

.. math::

    -\\mathcal{L}(x) + \\gamma \\, \\mathrm{TC}(z), \\qquad
    \\mathrm{TC}(z) = \\mathrm{KL}\\Big(q(z) \\,\\Big\\|\\, \\prod_j q(z_j)\\Big),

where :math:`q(z) = \\mathbb{E}_{p(x)}[q(z|x)]` is the aggregate posterior. The TC has no closed form;
it is estimated by the density-ratio trick: a discriminator :math:`D(z)` is trained to tell samples
of :math:`q(z)` from samples of :math:`\\prod_j q(z_j)` (the same batch of codes with each dimension
shuffled independently over the batch, ``permute_dims``), and then

.. math:: \\mathrm{TC}(z) \\approx \\mathbb{E}_{q(z)}\\Big[\\log \\frac{D(z)}{1 - D(z)}\\Big],

the mean of the discriminator's logit on codes of the batch. As in disentanglement_lib, the shuffled
codes come from the same batch (the paper's Algorithm 2 shuffles the codes of a second batch). The discriminator has its own
optimizer (Adam, learning rate 1e-4, beta_1 0.5, beta_2 0.9 as in the paper) and is updated in the
same step as the VAE, from the same forward pass, through the base class's auxiliary hooks
(:meth:`vaezoo.BaseVAE.auxiliary_variables`); the VAE's optimizer never moves it.

Example:

>>> import keras, vaezoo
>>> model = vaezoo.get("factor_vae", gamma=35.0)        # 64x64 sprites, 10 latents
>>> model.compile(keras.optimizers.Adam(1e-4))          # the discriminator gets its own Adam
>>> # model.fit(data.load("sprites_grid"))  # metrics: loss, elbo, ..., total_correlation, discriminator_loss

Reference:
    Kim & Mnih, "Disentangling by Factorising", ICML 2018 (Algorithms 1 and 2).
"""

from __future__ import annotations

import keras
import tensorflow as tf

from vaezoo import config as cfg
from vaezoo import distribute
from vaezoo.models.vae import VAE
from vaezoo.registry import register_model


def permute_dims(z: tf.Tensor, seed) -> tf.Tensor:
    """Shuffle each column of ``z`` ``[B, d]`` independently along the batch (Kim & Mnih 2018, Alg. 2).

    Each dimension keeps its values (so its marginal), but the dimensions are drawn independently:
    samples of :math:`\\prod_j q(z_j)` from samples of :math:`q(z)`. ``seed`` is a stateless ``int32[2]``.
    """
    keys = tf.random.stateless_uniform(tf.shape(z), seed)
    order = tf.argsort(keys, axis=0)  # [B, d]: a permutation of the rows per column
    return tf.transpose(tf.gather(tf.transpose(z), tf.transpose(order), batch_dims=1))


@keras.saving.register_keras_serializable(package="vaezoo")
class FactorVAE(VAE):
    """VAE + gamma * total correlation, the TC estimated by a discriminator with its own optimizer.

    The ``total_correlation`` metric is the discriminator's estimate (nats, may be negative early
    on); ``discriminator_loss`` is its cross-entropy (log 2 = 0.693 when it cannot tell the two
    apart). ``elbo`` is the unpenalised ELBO.

    Args:
        gamma: weight of the TC penalty (the paper: 40 on dSprites; disentanglement_lib sweeps 10..100).
        discriminator_units: hidden layer sizes of the discriminator MLP (leaky ReLU, slope 0.2);
            the paper: six layers of 1000.
        discriminator_learning_rate: learning rate of its Adam (beta_1 0.5, beta_2 0.9).
        **kwargs: as :class:`vaezoo.VAE`.
    """

    metric_names = ("elbo", "reconstruction", "kl", "total_correlation", "discriminator_loss")
    config_constraints = {"gamma": cfg.NON_NEGATIVE, "discriminator_units": cfg.AT_LEAST_1,
                          "discriminator_learning_rate": cfg.POSITIVE}

    def __init__(self, gamma: float = 35.0, discriminator_units: tuple[int, ...] = (1000,) * 6,
                 discriminator_learning_rate: float = 1e-4, **kwargs):
        if not discriminator_units:
            raise cfg.ConfigError("Config key 'discriminator_units' of model 'FactorVAE' must list at least one layer "
                                  "size, got [].")
        # Plain values first: VAE.__init__ builds the model, and build() below makes the discriminator.
        self.gamma = float(gamma)
        self.discriminator_units = tuple(int(u) for u in discriminator_units)
        self.discriminator_learning_rate = float(discriminator_learning_rate)
        super().__init__(**kwargs)

    def build(self, input_shape=None):
        # Sub-layers are made in build(), before Keras locks the model's state.
        self.discriminator = keras.Sequential(
            [keras.Input((self.latent_dim,)),
             *[keras.layers.Dense(u, activation="leaky_relu") for u in self.discriminator_units],
             keras.layers.Dense(1)],
            name="discriminator",
        )
        super().build(input_shape)

    def discriminator_logits(self, z, training=False):
        """The logit of D(z) = P(z was drawn from q(z), not from prod_j q(z_j)), ``[B]``, float32."""
        return tf.cast(self.discriminator(z, training=training)[:, 0], tf.float32)

    def compute_terms(self, x, training=False, seed=None, condition=None):
        seed = self.next_seed(seed)
        terms = super().compute_terms(x, training=training, seed=seed, condition=condition)
        z = terms["z"][0]  # [B, latent_dim]: the first posterior sample of each example
        real = self.discriminator_logits(z, training=training)
        # prod_j q(z_j): the codes of the (global) batch, each dimension shuffled over the batch.
        codes = distribute.gather_batch(tf.stop_gradient(z))
        shuffle_seed = tf.random.experimental.stateless_fold_in(seed, 1)
        shuffled = distribute.replica_rows(lambda _: permute_dims(codes, shuffle_seed), tf.shape(z)[0])
        fake = self.discriminator_logits(shuffled, training=training)
        terms["total_correlation"] = real
        # Cross-entropy of D: label 1 for codes of q(z), 0 for shuffled codes (averaged over the two).
        terms["discriminator_loss"] = 0.5 * (tf.nn.softplus(-real) + tf.nn.softplus(fake))
        return terms

    def objective(self, terms):
        return super().objective(terms) + self.gamma * tf.reduce_mean(terms["total_correlation"])

    def auxiliary_variables(self):
        return self.discriminator.trainable_variables

    def auxiliary_loss(self, terms):
        return tf.reduce_mean(terms["discriminator_loss"])

    def default_auxiliary_optimizer(self):
        return keras.optimizers.Adam(self.discriminator_learning_rate, beta_1=0.5, beta_2=0.9)


register_model(FactorVAE, name="factor_vae")
