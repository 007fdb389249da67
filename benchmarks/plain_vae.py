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
    input_kind = "images"  # what benchmarks/throughput.py feeds it

    def __init__(self, data_shape=(28, 28, 1), latent_dim=32, hidden_units=(512, 256), seed=0, **kwargs):
        super().__init__(**kwargs)
        self.latent_dim = latent_dim
        self.data_shape = tuple(data_shape)
        self.encoder = keras.Sequential(
            [keras.Input(data_shape), keras.layers.Flatten()]
            + [keras.layers.Dense(u, activation="relu") for u in hidden_units]
            + [keras.layers.Dense(2 * latent_dim)],
            name="encoder",
        )
        self.decoder = keras.Sequential(
            [keras.Input((latent_dim,))]
            + [keras.layers.Dense(u, activation="relu") for u in reversed(hidden_units)]
            + [keras.layers.Dense(int(tf.reduce_prod(data_shape))), keras.layers.Reshape(data_shape)],
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
        with tf.GradientTape() as tape:
            mean, log_var = tf.split(self.encoder(x), 2, axis=-1)
            eps = keras.random.normal(tf.shape(mean), seed=self.seed_generator)
            z = mean + tf.exp(0.5 * log_var) * eps
            logits = self.decoder(z)
            reconstruction = tf.reduce_sum(
                tf.nn.sigmoid_cross_entropy_with_logits(labels=x, logits=logits), axis=[1, 2, 3]
            )
            kl = -0.5 * tf.reduce_sum(1.0 + log_var - tf.square(mean) - tf.exp(log_var), axis=-1)
            loss = tf.reduce_mean(reconstruction + kl)
        grads = tape.gradient(loss, self.trainable_variables)
        self.optimizer.apply(grads, self.trainable_variables)
        for tracker, value in zip(self.trackers, (loss, tf.reduce_mean(reconstruction), tf.reduce_mean(kl))):
            tracker.update_state(value)
        return {t.name: t.result() for t in self.trackers}
