"""The baselines of benchmarks/throughput.py: plain hand-written Keras 3 twins of vaezoo models, no vaezoo.

:class:`PlainVAE`: exactly the layers of ``vaezoo.get("vae")`` (784-512-256-32, ReLU; a Dense(64) head for the
mean and log-variance; decoder 32-256-512-784), a Bernoulli likelihood on logits, the closed-form Gaussian KL and
one reparameterised sample, written the way the Keras VAE example writes it: a custom ``train_step`` with
``GradientTape`` and ``Mean`` trackers. It uses no TFP. With other arguments, the twins of ``vae_conv``, ``iwae``,
``miwae`` (M groups of K samples), ``vae_vamp`` (the VampPrior of Tomczak & Welling 2018, its KL by Monte Carlo)
and ``vae_planar`` (amortised planar flows in q(z|x), Rezende & Mohamed 2015) (:data:`EQUIVALENTS`).

:class:`PlainVQVAE`: the networks of ``vq_vae`` (one level of codes) and ``vq_vae2`` (top and bottom codes, the
bottom conditioned on the top), with a hand-written EMA quantiser (van den Oord et al. 2017, appendix; dead codes
restarted from the batch's encoder outputs, Dhariwal et al. 2020), the straight-through estimator, the commitment
loss and a Bernoulli likelihood on logits (:data:`VQ_EQUIVALENTS`).
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf


class PlainVAE(keras.Model):
    """The plain VAE (``num_samples`` = 1) or IWAE (K > 1: the K-sample bound of Burda et al. 2016, log-mean-exp
    of the log-weights) with the encoder and decoder of vaezoo's ``networks.py`` for ``architecture`` ``"mlp"``
    or ``"conv"``: the baselines of ``vae``, ``vae_conv`` and ``iwae``."""

    input_kind = "images"  # what benchmarks/throughput.py feeds it

    def __init__(self, data_shape=(28, 28, 1), latent_dim=32, hidden_units=(512, 256), seed=0, architecture="mlp",
                 conv_filters=(32, 64), activation="relu", num_samples=1, prior="normal", num_pseudo_inputs=500,
                 num_groups=1, posterior="gaussian", num_flows=10, **kwargs):
        super().__init__(**kwargs)
        self.latent_dim = latent_dim
        self.data_shape = tuple(data_shape)
        self.num_samples, self.num_groups = int(num_samples), int(num_groups)
        self.prior, self.posterior, self.num_flows = prior, posterior, int(num_flows)
        if prior == "vamp":  # Tomczak & Welling 2018: pseudo-inputs u = hardtanh(W), W ~ N(0.05, 0.01^2)
            self.pseudo_inputs = self.add_weight(
                name="pseudo_inputs", shape=(num_pseudo_inputs, *self.data_shape),
                initializer=keras.initializers.RandomNormal(0.05, 0.01, seed=seed))
        convs = [keras.layers.Conv2D(f, 4, strides=2, padding="same", activation=activation)
                 for f in conv_filters] if architecture == "conv" else []
        planar = posterior == "planar"  # the Gaussian's head and the flow's beside it, on the last hidden layer
        self.encoder = keras.Sequential(
            [keras.Input(data_shape), *convs, keras.layers.Flatten()]
            + [keras.layers.Dense(u, activation=activation) for u in hidden_units]
            + ([] if planar else [keras.layers.Dense(2 * latent_dim)]),
            name="encoder",
        )
        if planar:  # Rezende & Mohamed 2015, amortised: u_k, w_k, b_k per example and step
            self.gaussian_head = keras.layers.Dense(2 * latent_dim)
            self.flow_head = keras.layers.Dense(self.num_flows * (2 * latent_dim + 1))
            for head in (self.gaussian_head, self.flow_head):
                head.build((None, hidden_units[-1]))
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
        mean, _, flow = self.encode(x)
        return tf.sigmoid(self.decoder(mean if flow is None else self.planar_flow(mean, flow)[0]))

    def encode(self, x):
        """The base Gaussian's mean and log-variance ``[B, L]`` and the planar flows' parameters
        ``[B, num_flows, 2 L + 1]`` (None for the Gaussian posterior)."""
        if self.posterior != "planar":
            return (*tf.split(self.encoder(x), 2, axis=-1), None)
        h = self.encoder(x)
        mean, log_var = tf.split(self.gaussian_head(h), 2, axis=-1)
        return mean, log_var, tf.reshape(self.flow_head(h), [-1, self.num_flows, 2 * self.latent_dim + 1])

    def planar_flow(self, z, flow):
        """z_K = f_K(...f_1(z_0)), f(z) = z + u_hat tanh(w.z + b) with Rezende & Mohamed's u_hat (appendix A.1,
        raised by 1e-3 as vaezoo's), and the sum of log|1 + u_hat.psi(z)| over the steps."""
        d, log_det = self.latent_dim, 0.0
        for k in range(self.num_flows):
            u, w, b = flow[:, k, :d], flow[:, k, d:2 * d], flow[:, k, 2 * d]
            wu = tf.reduce_sum(w * u, axis=-1, keepdims=True)
            u_hat = u + (tf.nn.softplus(wu) - 1.0 + 1e-3 - wu) * w / (tf.reduce_sum(w * w, -1, keepdims=True) + 1e-8)
            t = tf.tanh(tf.reduce_sum(w * z, axis=-1) + b)
            z = z + u_hat * t[..., None]
            log_det += tf.math.log(tf.abs(1.0 + (1.0 - t**2) * tf.reduce_sum(w * u_hat, axis=-1)) + 1e-12)
        return z, log_det

    def log_prior(self, z):
        """log p(z) of ``z`` ``[..., L]``: N(0, I), or the VampPrior's mixture of the encoder's Gaussians at the
        pseudo-inputs (with the constants: ``- L/2 log 2 pi`` per component)."""
        if self.prior != "vamp":
            return -0.5 * tf.reduce_sum(tf.square(z) + np.log(2 * np.pi), axis=-1)
        means, log_vars = tf.split(self.encoder(tf.clip_by_value(self.pseudo_inputs, 0.0, 1.0)), 2, axis=-1)  # [C, L]
        diff = z[..., None, :] - means  # [..., C, L]
        log_n = -0.5 * tf.reduce_sum(tf.square(diff) * tf.exp(-log_vars) + log_vars + np.log(2 * np.pi), axis=-1)
        return tf.reduce_logsumexp(log_n, axis=-1) - tf.math.log(float(self.pseudo_inputs.shape[0]))

    def bound(self, x, eps):
        """The loss (the negative bound), the reconstruction ``[n, B]`` and the KL ``[B]`` from noise eps
        ``[n, B, L]``, n = ``num_groups`` x ``num_samples``: one sample: the ELBO (the closed-form KL for the
        Gaussian posterior and prior, else by Monte Carlo); more: the IWAE bound of Burda et al. 2016, or
        MIWAE's mean over M groups of K-sample bounds (Rainforth et al. 2018)."""
        mean, log_var, flow = self.encode(x)
        k, n = self.num_samples, self.num_samples * self.num_groups
        z = mean + tf.exp(0.5 * log_var) * eps  # [n, B, L]
        log_det = 0.0
        if flow is not None:
            z, log_det = self.planar_flow(z, flow)
        logits = self.decoder(tf.reshape(z, [-1, self.latent_dim]))
        labels = tf.reshape(tf.tile(x[None], [n, 1, 1, 1, 1]), tf.shape(logits))
        reconstruction = tf.reshape(tf.reduce_sum(
            tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits), axis=[1, 2, 3]), [n, -1])
        if n == 1 and (self.prior == "vamp" or flow is not None):  # Monte-Carlo KL: log q(z|x) - log p(z)
            log_q = -0.5 * tf.reduce_sum(tf.square(eps[0]) + log_var + np.log(2 * np.pi), axis=-1)
            if flow is not None:
                log_q -= log_det[0]
            kl = log_q - self.log_prior(z[0])
            loss = tf.reduce_mean(reconstruction[0] + kl)
        elif n == 1:  # the closed-form Gaussian KL
            kl = -0.5 * tf.reduce_sum(1.0 + log_var - tf.square(mean) - tf.exp(log_var), axis=-1)
            loss = tf.reduce_mean(reconstruction[0] + kl)
        else:  # log w = log p(x|z) + log p(z) - log q(z|x); the normalising constants cancel
            log_q = -0.5 * tf.reduce_sum(tf.square(eps) + log_var, axis=-1) - log_det
            log_p = -0.5 * tf.reduce_sum(tf.square(z), axis=-1)
            kl = tf.reduce_mean(log_q - log_p, axis=0)
            log_w = tf.reshape(-reconstruction + log_p - log_q, [self.num_groups, k, -1])
            loss = -tf.reduce_mean(tf.reduce_logsumexp(log_w, axis=1) - tf.math.log(float(k)))
        return loss, reconstruction, kl

    def train_step(self, x):
        n = self.num_samples * self.num_groups
        with tf.GradientTape() as tape:
            eps = keras.random.normal(tf.concat([[n], [tf.shape(x)[0], self.latent_dim]], 0), seed=self.seed_generator)
            loss, reconstruction, kl = self.bound(x, eps)
        grads = tape.gradient(loss, self.trainable_variables)
        self.optimizer.apply(grads, self.trainable_variables)
        for tracker, value in zip(self.trackers, (loss, tf.reduce_mean(reconstruction), tf.reduce_mean(kl))):
            tracker.update_state(value)
        return {t.name: t.result() for t in self.trackers}


def _residual_stack(h, channels, residual_channels, blocks):
    for _ in range(blocks):
        r = keras.layers.Conv2D(residual_channels, 3, padding="same", activation="relu")(keras.layers.ReLU()(h))
        h = keras.layers.Add()([h, keras.layers.Conv2D(channels, 1)(r)])
    return keras.layers.ReLU()(h)


class PlainQuantizer(keras.layers.Layer):
    """Nearest-code quantisation with EMA codebook updates (decay, Laplace-smoothed counts) and restarts of codes
    unused for ``restart_after`` steps; returns the straight-through codes, the commitment loss per example, the
    perplexity of the batch's code usage and the fraction of codes used."""

    def __init__(self, num_codes, code_dim, beta=0.25, decay=0.99, restart_after=5, epsilon=1e-5, seed=0, **kwargs):
        super().__init__(**kwargs)
        self.num_codes, self.code_dim, self.beta, self.decay = num_codes, code_dim, beta, decay
        self.restart_after, self.epsilon = restart_after, epsilon
        init = keras.initializers.RandomUniform(-1.0 / num_codes, 1.0 / num_codes, seed=seed)
        self.codebook = self.add_weight(name="codebook", shape=(num_codes, code_dim), initializer=init,
                                        trainable=False)
        self.cluster = self.add_weight(name="cluster", shape=(num_codes,), initializer="zeros", trainable=False)
        self.sums = self.add_weight(name="sums", shape=(num_codes, code_dim), initializer="zeros", trainable=False)
        self.unused = self.add_weight(name="unused", shape=(num_codes,), initializer="zeros", trainable=False)
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, z_e, training=False):
        flat = tf.reshape(z_e, [-1, self.code_dim])
        distances = (tf.reduce_sum(flat**2, 1, keepdims=True) - 2.0 * tf.matmul(flat, self.codebook, transpose_b=True)
                     + tf.reduce_sum(self.codebook**2, 1)[None])
        idx = tf.argmin(distances, axis=1, output_type=tf.int32)
        one_hot = tf.one_hot(idx, self.num_codes)
        counts = tf.reduce_sum(one_hot, 0)
        if training:
            cluster = self.decay * self.cluster + (1.0 - self.decay) * counts
            sums = self.decay * self.sums + (1.0 - self.decay) * tf.matmul(one_hot, tf.stop_gradient(flat),
                                                                           transpose_a=True)
            total = tf.reduce_sum(cluster)
            smoothed = (cluster + self.epsilon) / (total + self.num_codes * self.epsilon) * total
            codebook = sums / smoothed[:, None]
            unused = tf.where(counts > 0, 0.0, self.unused + 1.0)
            dead = unused >= float(self.restart_after)
            fresh = tf.gather(tf.stop_gradient(flat), keras.random.randint(
                (self.num_codes,), 0, tf.shape(flat)[0], seed=self.seed_generator))
            self.codebook.assign(tf.where(dead[:, None], fresh, codebook))
            self.cluster.assign(tf.where(dead, 1.0, cluster))
            self.sums.assign(tf.where(dead[:, None], fresh, sums))
            self.unused.assign(tf.where(dead, 0.0, unused))
        e = tf.reshape(tf.gather(self.codebook, idx), tf.shape(z_e))
        commitment = self.beta * tf.reduce_mean(tf.square(z_e - tf.stop_gradient(e)), axis=[1, 2, 3])
        probs = counts / tf.reduce_sum(counts)
        perplexity = tf.exp(-tf.reduce_sum(probs * tf.math.log(probs + 1e-10)))
        usage = tf.reduce_mean(tf.cast(counts > 0, tf.float32))
        return z_e + tf.stop_gradient(e - z_e), commitment, perplexity, usage


class PlainVQVAE(keras.Model):
    """The VQ-VAE (``levels=1``: ``downsample`` stride-2 convolutions to one code map) or VQ-VAE-2 (``levels=2``:
    bottom codes at 1/2^downsample, top codes at half that, the bottom level conditioned on the decoded top) of
    vaezoo's ``vq_vae`` and ``vq_vae2``, layer for layer (the same sub-model names, so weights copy across)."""

    input_kind = "images"

    def __init__(self, levels=1, data_shape=(28, 28, 1), hidden_channels=64, residual_channels=32, residual_blocks=2,
                 downsample=2, num_codes=64, code_dim=16, beta=0.25, decay=0.99, restart_after=5, seed=0, **kwargs):
        super().__init__(**kwargs)
        self.levels, self.data_shape = levels, tuple(data_shape)
        c, r, n, d = hidden_channels, residual_channels, residual_blocks, code_dim
        h, w = data_shape[0] // 2**downsample, data_shape[1] // 2**downsample
        x = inputs = keras.Input(data_shape)
        for _ in range(downsample):
            x = keras.layers.Conv2D(c, 4, strides=2, padding="same", activation="relu")(x)
        x = _residual_stack(keras.layers.Conv2D(c, 3, padding="same")(x), c, r, n)
        quantizer = dict(beta=beta, decay=decay, restart_after=restart_after)
        if levels == 1:
            self.encoder = keras.Model(inputs, keras.layers.Conv2D(d, 1)(x), name="encoder")
            x = inputs = keras.Input((h, w, d))
        else:
            self.bottom_encoder = keras.Model(inputs, x, name="bottom_encoder")
            x = inputs = keras.Input((h, w, c))
            x = keras.layers.Conv2D(c, 4, strides=2, padding="same", activation="relu")(x)
            x = _residual_stack(keras.layers.Conv2D(c, 3, padding="same")(x), c, r, n)
            self.top_encoder = keras.Model(inputs, keras.layers.Conv2D(d, 1)(x), name="top_encoder")
            x = inputs = keras.Input((h // 2, w // 2, d))
            x = _residual_stack(keras.layers.Conv2D(c, 3, padding="same")(x), c, r, n)
            self.top_decoder = keras.Model(inputs, keras.layers.Conv2DTranspose(d, 4, strides=2, padding="same")(x),
                                           name="top_decoder")
            self.bottom_projection = keras.layers.Conv2D(d, 1, name="bottom_projection")
            self.bottom_projection.build((None, h, w, c + d))
            self.top_quantizer = PlainQuantizer(num_codes, d, seed=seed, name="top_quantizer", **quantizer)
            bottom_in, top_in = keras.Input((h, w, d)), keras.Input((h // 2, w // 2, d))
            top_up = keras.layers.Conv2DTranspose(d, 4, strides=2, padding="same")(top_in)
            inputs = [bottom_in, top_in]
            x = keras.layers.Concatenate()([bottom_in, top_up])
        x = _residual_stack(keras.layers.Conv2D(c, 3, padding="same")(x), c, r, n)
        for _ in range(downsample - 1):
            x = keras.layers.Conv2DTranspose(c, 4, strides=2, padding="same", activation="relu")(x)
        self.decoder = keras.Model(inputs, keras.layers.Conv2DTranspose(data_shape[2], 4, strides=2, padding="same")(x),
                                   name="decoder")
        self.quantizer = PlainQuantizer(num_codes, d, seed=seed + levels - 1, name="quantizer", **quantizer)
        names = ("loss", "reconstruction", "commitment") + (
            ("perplexity", "codes_used") if levels == 1 else
            ("perplexity_top", "perplexity_bottom", "codes_used_top", "codes_used_bottom"))
        self.trackers = [keras.metrics.Mean(name=m) for m in names]
        self.built = True

    @property
    def metrics(self):
        return self.trackers

    def _logits(self, x, training=False):
        """Decoder logits and the quantisers' (commitment, perplexity, usage) of each level (top first)."""
        if self.levels == 1:
            q, *stats = self.quantizer(self.encoder(x), training=training)
            return self.decoder(q), [stats]
        h_b = self.bottom_encoder(x)
        q_t, *top = self.top_quantizer(self.top_encoder(h_b), training=training)
        q_b, *bottom = self.quantizer(self.bottom_projection(tf.concat([h_b, self.top_decoder(q_t)], -1)),
                                      training=training)
        return self.decoder([q_b, q_t]), [top, bottom]

    def call(self, x):
        return tf.sigmoid(self._logits(x)[0])

    def train_step(self, data):
        x = keras.utils.unpack_x_y_sample_weight(data)[0]
        with tf.GradientTape() as tape:
            logits, stats = self._logits(x, training=True)
            reconstruction = tf.reduce_sum(tf.nn.sigmoid_cross_entropy_with_logits(labels=x, logits=logits), [1, 2, 3])
            commitment = tf.add_n([s[0] for s in stats])
            loss = tf.reduce_mean(reconstruction + commitment)
        grads = tape.gradient(loss, self.trainable_variables)
        self.optimizer.apply(grads, self.trainable_variables)
        values = [loss, tf.reduce_mean(reconstruction), tf.reduce_mean(commitment)]
        values += [s[1] for s in stats] + [s[2] for s in stats]
        for tracker, value in zip(self.trackers, values):
            tracker.update_state(value)
        return {t.name: t.result() for t in self.trackers}


#: The plain equivalents of vaezoo models, by registry name: the PlainVAE arguments that give the same network.
EQUIVALENTS = {
    "vae": {},
    "vae_conv": {"architecture": "conv", "hidden_units": (256,), "conv_filters": (32, 64)},
    "iwae": {"latent_dim": 50, "hidden_units": (200, 200), "activation": "tanh", "num_samples": 5},
    "vae_vamp": {"latent_dim": 50, "hidden_units": (200, 200), "activation": "tanh", "prior": "vamp",
                 "num_pseudo_inputs": 500},
    "vae_planar": {"latent_dim": 50, "hidden_units": (200, 200), "activation": "tanh", "posterior": "planar",
                   "num_flows": 10},
    "miwae": {"latent_dim": 50, "hidden_units": (200, 200), "activation": "tanh", "num_samples": 8, "num_groups": 8},
}

#: The same for the vector-quantised families: the PlainVQVAE arguments of their registry configs.
VQ_EQUIVALENTS = {
    "vq_vae": {"levels": 1, "downsample": 2},
    "vq_vae2": {"levels": 2, "downsample": 1},
}


def plain_twin(name: str, seed: int = 0) -> keras.Model:
    """The hand-written twin of the vaezoo model ``name`` (a key of :data:`EQUIVALENTS` or :data:`VQ_EQUIVALENTS`)."""
    if name in VQ_EQUIVALENTS:
        return PlainVQVAE(seed=seed, **VQ_EQUIVALENTS[name])
    return PlainVAE(seed=seed, **EQUIVALENTS[name])


#: Every model with a twin.
TWINS = (*EQUIVALENTS, *VQ_EQUIVALENTS)
