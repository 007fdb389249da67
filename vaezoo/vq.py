"""Vector quantisation: the discrete bottleneck of VQ-VAE, as a Keras 3 layer.

Each D-dimensional encoder output z_e is replaced by its nearest codebook vector
e_k, k = argmin_j ||z_e - e_j||. Gradients pass straight through the quantisation
(z_q = z_e + sg[e_k - z_e]); the codebook is trained either by the codebook loss
||sg[z_e] - e||^2 or, with ``ema=True``, by exponential moving averages of the encoder outputs
assigned to each code (with Laplace-smoothed cluster sizes). The encoder is held near its codes by
the commitment loss beta ||z_e - sg[e]||^2.

Under ``tf.distribute`` the EMA statistics (counts and sums of assigned outputs) are summed over
replicas before the update, and restarts draw from the gathered global batch, so every replica
keeps the same codebook as one device training on the global batch. Codes left unused for
``restart_after`` training steps are re-initialised from encoder outputs of the current batch.

Example:

>>> vq = VectorQuantizer(num_codes=512, code_dim=64, ema=True)
>>> out = vq(z_e, training=True)   # dict: quantized, indices, commitment, codebook, perplexity, usage

References:
    van den Oord, Vinyals & Kavukcuoglu, "Neural Discrete Representation Learning", NeurIPS 2017
    (straight-through estimator, codebook and commitment losses, EMA updates in its appendix).
    Razavi, van den Oord & Vinyals, "Generating Diverse High-Fidelity Images with VQ-VAE-2", 2019.
    Dhariwal et al., "Jukebox", 2020 (restarting dead codes).
"""

from __future__ import annotations

import keras
import tensorflow as tf

from vaezoo import distribute

_register = keras.saving.register_keras_serializable(package="vaezoo")


@_register
class VectorQuantizer(keras.layers.Layer):
    """Nearest-codebook-vector quantiser with straight-through gradients.

    Args:
        num_codes: K, codebook size.
        code_dim: D, dimension of each code (the last axis of the input).
        beta: commitment-loss weight (0.25 in the paper).
        ema: update the codebook by exponential moving averages instead of gradients.
        decay: EMA decay (0.99).
        epsilon: Laplace smoothing of the EMA cluster sizes.
        restart_after: re-initialise codes unused for this many training steps (0: never).
        seed: seed of the codebook initialiser and of the restarts.

    ``call(z_e, training)`` takes ``[..., D]`` and returns a dict: ``quantized`` (straight-through,
    same shape), ``indices`` (``[...]`` int32), per-example ``commitment`` and ``codebook`` losses
    (``[B]``), and batch statistics ``perplexity`` (exp of the entropy of code usage) and ``usage``
    (fraction of codes used in the batch).
    """

    def __init__(
        self,
        num_codes: int,
        code_dim: int,
        beta: float = 0.25,
        ema: bool = False,
        decay: float = 0.99,
        epsilon: float = 1e-5,
        restart_after: int = 0,
        seed: int | None = None,
        **kwargs,
    ):
        kwargs.setdefault("dtype", "float32")  # distances and EMA statistics in float32 under mixed precision
        super().__init__(**kwargs)
        self.num_codes = int(num_codes)
        self.code_dim = int(code_dim)
        self.beta = float(beta)
        self.ema = bool(ema)
        self.decay = float(decay)
        self.epsilon = float(epsilon)
        self.restart_after = int(restart_after)
        self.seed = seed
        self._restart_seed = keras.random.SeedGenerator(seed, name="restart_seed")

    def build(self, input_shape=None):
        k, d = self.num_codes, self.code_dim
        init = keras.initializers.RandomUniform(-1.0 / k, 1.0 / k, seed=self.seed)
        self.codebook = self.add_weight(name="codebook", shape=(k, d), initializer=init, trainable=not self.ema,
                                        aggregation="none")
        if self.ema:
            self.ema_cluster_size = self.add_weight(name="ema_cluster_size", shape=(k,), initializer="zeros",
                                                    trainable=False, aggregation="none")
            self.ema_sum = self.add_weight(name="ema_sum", shape=(k, d), initializer="zeros", trainable=False,
                                           aggregation="none")
        # Training steps since each code was last used (for restarts and the usage statistics).
        self.steps_unused = self.add_weight(name="steps_unused", shape=(k,), initializer="zeros", trainable=False,
                                            aggregation="none")
        self.built = True

    def indices(self, z_e):
        """Nearest code index of each ``[..., D]`` vector."""
        flat = tf.reshape(z_e, [-1, self.code_dim])
        distances = (
            tf.reduce_sum(flat**2, axis=1, keepdims=True)
            - 2.0 * tf.matmul(flat, self.codebook, transpose_b=True)
            + tf.reduce_sum(self.codebook**2, axis=1)[None, :]
        )
        return tf.reshape(tf.argmin(distances, axis=1, output_type=tf.int32), tf.shape(z_e)[:-1])

    def lookup(self, indices):
        """Codebook vectors of ``indices`` (``[...]`` -> ``[..., D]``)."""
        return tf.gather(self.codebook, indices)

    def call(self, z_e, training=False):
        z_e = tf.convert_to_tensor(z_e)
        idx = self.indices(z_e)
        one_hot = tf.one_hot(tf.reshape(idx, [-1]), self.num_codes, dtype=z_e.dtype)  # [N, K]
        if training:
            self._update(tf.reshape(z_e, [-1, self.code_dim]), one_hot)
        e = self.lookup(idx)
        axes = list(range(1, z_e.shape.rank))
        commitment = self.beta * tf.reduce_mean(tf.square(z_e - tf.stop_gradient(e)), axis=axes)
        codebook = (
            tf.zeros_like(commitment)
            if self.ema
            else tf.reduce_mean(tf.square(tf.stop_gradient(z_e) - e), axis=axes)
        )
        counts = tf.reduce_sum(one_hot, axis=0)
        probs = counts / tf.reduce_sum(counts)
        perplexity = tf.exp(-tf.reduce_sum(probs * tf.math.log(probs + 1e-10)))
        return {
            "quantized": z_e + tf.stop_gradient(e - z_e),  # straight-through estimator
            "indices": idx,
            "commitment": commitment,
            "codebook": codebook,
            "perplexity": perplexity,
            "usage": tf.reduce_mean(tf.cast(counts > 0, z_e.dtype)),
        }

    def _update(self, flat, one_hot):
        """EMA codebook update and dead-code restarts (training only), synchronised over replicas."""
        counts = tf.reduce_sum(one_hot, axis=0)  # [K]
        sums = tf.matmul(one_hot, tf.stop_gradient(flat), transpose_a=True)  # [K, D]
        counts, sums = distribute.sum_over_replicas(counts, sums)
        if self.ema:
            cluster = self.decay * self.ema_cluster_size + (1.0 - self.decay) * counts
            ema_sum = self.decay * self.ema_sum + (1.0 - self.decay) * sums
            total = tf.reduce_sum(cluster)
            smoothed = (cluster + self.epsilon) / (total + self.num_codes * self.epsilon) * total
            self.ema_cluster_size.assign(cluster)
            self.ema_sum.assign(ema_sum)
            self.codebook.assign(ema_sum / smoothed[:, None])
        unused = tf.where(counts > 0, tf.zeros_like(self.steps_unused), self.steps_unused + 1.0)
        if self.restart_after > 0:
            dead = unused >= float(self.restart_after)
            # Replacement vectors: random encoder outputs of the global batch (every replica
            # gathers it and draws the same picks, as one device would).
            with tf.control_dependencies([counts, sums]):  # collectives in one order on every replica
                everyone = tf.stop_gradient(distribute.gather_batch(flat))
            picks = keras.random.randint((self.num_codes,), 0, tf.shape(everyone)[0], seed=self._restart_seed)
            fresh = tf.gather(everyone, picks)
            self.codebook.assign(tf.where(dead[:, None], fresh, self.codebook))
            if self.ema:
                self.ema_cluster_size.assign(tf.where(dead, tf.ones_like(cluster), self.ema_cluster_size))
                self.ema_sum.assign(tf.where(dead[:, None], fresh, self.ema_sum))
            unused = tf.where(dead, tf.zeros_like(unused), unused)
        self.steps_unused.assign(unused)

    def get_config(self):
        return {
            **super().get_config(),
            "num_codes": self.num_codes,
            "code_dim": self.code_dim,
            "beta": self.beta,
            "ema": self.ema,
            "decay": self.decay,
            "epsilon": self.epsilon,
            "restart_after": self.restart_after,
            "seed": self.seed,
        }
