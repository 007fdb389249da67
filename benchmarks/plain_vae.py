"""The baseline of benchmarks/throughput.py: a plain hand-written Keras 3 VAE, no vaezoo.

Exactly the layers of ``vaezoo.get("vae")`` (784-512-256-32, ReLU; a Dense(64) head for the mean
and log-variance; decoder 32-256-512-784), a Bernoulli likelihood on logits, the closed-form
Gaussian KL and one reparameterised sample, written the way the Keras VAE example writes it: a
custom ``train_step`` with ``GradientTape`` and ``Mean`` trackers. It uses no TFP.
"""

from __future__ import annotations

import keras
import tensorflow as tf


class PlainVAE(keras.Model):
    """The plain VAE (``num_samples`` = 1) or IWAE (K > 1: the K-sample bound of Burda et al. 2016, log-mean-exp
    of the log-weights) with the encoder and decoder of vaezoo's ``networks.py`` for ``architecture`` ``"mlp"``
    or ``"conv"``: the baselines of ``vae``, ``vae_conv`` and ``iwae``."""

    input_kind = "images"  # what benchmarks/throughput.py feeds it

    def __init__(self, data_shape=(28, 28, 1), latent_dim=32, hidden_units=(512, 256), seed=0, architecture="mlp",
                 conv_filters=(32, 64), activation="relu", num_samples=1, **kwargs):
        super().__init__(**kwargs)
        self.latent_dim = latent_dim
        self.data_shape = tuple(data_shape)
        self.num_samples = int(num_samples)
        convs = [keras.layers.Conv2D(f, 4, strides=2, padding="same", activation=activation)
                 for f in conv_filters] if architecture == "conv" else []
        self.encoder = keras.Sequential(
            [keras.Input(data_shape), *convs, keras.layers.Flatten()]
            + [keras.layers.Dense(u, activation=activation) for u in hidden_units]
            + [keras.layers.Dense(2 * latent_dim)],
            name="encoder",
        )
        if architecture == "conv":
            factor = 2 ** len(conv_filters)
            h, w = data_shape[0] // factor, data_shape[1] // factor
            head = [keras.layers.Dense(h * w * conv_filters[-1], activation=activation),
                    keras.layers.Reshape((h, w, conv_filters[-1]))]
            head += [keras.layers.Conv2DTranspose(f, 4, strides=2, padding="same", activation=activation)
                     for f in reversed(conv_filters[:-1])]
            head.append(keras.layers.Conv2DTranspose(data_shape[-1], 4, strides=2, padding="same"))
        else:
            head = [keras.layers.Dense(int(tf.reduce_prod(data_shape))), keras.layers.Reshape(data_shape)]
        self.decoder = keras.Sequential(
            [keras.Input((latent_dim,))] + [keras.layers.Dense(u, activation=activation) for u in reversed(hidden_units)]
            + head,
            name="decoder",
        )
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.trackers = [keras.metrics.Mean(name=n) for n in ("loss", "reconstruction", "kl")]
        self.built = True

    @property
    def metrics(self):
        return self.trackers

    def call(self, x):
        mean, _ = tf.split(self.encoder(x), 2, axis=-1)
        return tf.sigmoid(self.decoder(mean))

    def train_step(self, x):
        k = self.num_samples
        with tf.GradientTape() as tape:
            mean, log_var = tf.split(self.encoder(x), 2, axis=-1)
            eps = keras.random.normal(tf.concat([[k], tf.shape(mean)], 0), seed=self.seed_generator)
            z = mean + tf.exp(0.5 * log_var) * eps  # [K, B, L]
            logits = self.decoder(tf.reshape(z, [-1, self.latent_dim]))
            labels = tf.reshape(tf.tile(x[None], [k, 1, 1, 1, 1]), tf.shape(logits))
            reconstruction = tf.reshape(tf.reduce_sum(
                tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits), axis=[1, 2, 3]), [k, -1])
            if k == 1:  # the closed-form Gaussian KL
                kl = -0.5 * tf.reduce_sum(1.0 + log_var - tf.square(mean) - tf.exp(log_var), axis=-1)
                loss = tf.reduce_mean(reconstruction[0] + kl)
            else:  # log w = log p(x|z) + log p(z) - log q(z|x); the normalising constants cancel
                log_q = -0.5 * tf.reduce_sum(tf.square(eps) + log_var, axis=-1)
                log_p = -0.5 * tf.reduce_sum(tf.square(z), axis=-1)
                kl = tf.reduce_mean(log_q - log_p, axis=0)
                log_w = -reconstruction + log_p - log_q
                loss = -tf.reduce_mean(tf.reduce_logsumexp(log_w, axis=0) - tf.math.log(float(k)))
        grads = tape.gradient(loss, self.trainable_variables)
        self.optimizer.apply(grads, self.trainable_variables)
        for tracker, value in zip(self.trackers, (loss, tf.reduce_mean(reconstruction), tf.reduce_mean(kl))):
            tracker.update_state(value)
        return {t.name: t.result() for t in self.trackers}


#: The plain equivalents of vaezoo models, by registry name: the PlainVAE arguments that give the same network.
EQUIVALENTS = {
    "vae": {},
    "vae_conv": {"architecture": "conv", "hidden_units": (256,), "conv_filters": (32, 64)},
    "iwae": {"latent_dim": 50, "hidden_units": (200, 200), "activation": "tanh", "num_samples": 5},
}
