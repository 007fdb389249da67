"""The conditional VAE: q(z|x, y), p(x|z, y) and p(z) or a learned p(z|y), for labelled data.

The conditional VAE (Sohn, Lee & Yan 2015) models p(x|y) for a label y (a class) with the conditional
evidence lower bound

.. math::

    \\log p(x|y) \\ge \\mathbb{E}_{q(z|x,y)}[\\log p(x|z,y)] - \\mathrm{KL}(q(z|x,y) \\| p(z|y)),

where the prior is N(0, I) (``conditional_prior=False``, the usual choice on MNIST) or a learned Gaussian per
class, p(z|y) = N(m_y, diag(s_y^2)) (``conditional_prior=True``, the paper's "conditional prior network" in its
simplest form). The label enters as a one-hot vector (or a row of class probabilities): concatenated to the
encoder's features before q's parameters, and to z at the decoder's input, for the ``mlp`` and the ``conv``
architectures alike. Everything else is the VAE's: the posterior (Gaussian or a flow), the likelihood, the KL
(closed form where TFP has it), importance-sampled log p(x|y) (:func:`vaezoo.evaluate.log_likelihood` passes the
labels), export.

Inputs: a dict ``{"images": x, "labels": y}`` (what ``encode``, ``elbo``, ``log_weights``, ``reconstruct`` and
``model(...)`` take), or ``(x, y)`` batches in ``fit``/``evaluate`` (``model.fit(x, y)`` works as in Keras). Labels
are integer classes ``[B]`` in ``[0, num_classes)`` or rows of class probabilities ``[B, num_classes]``.

Example:

>>> import numpy as np, vaezoo
>>> model = vaezoo.get("cvae", latent_dim=8, hidden_units=[64])
>>> x = np.zeros((4, 28, 28, 1), "float32"); y = np.array([0, 1, 2, 3])
>>> model.elbo({"images": x, "labels": y}).shape
TensorShape([4])
>>> model.sample(20, labels=np.repeat(np.arange(10), 2), seed=0).shape   # two of each digit
TensorShape([20, 28, 28, 1])

References:
    Sohn, Lee & Yan, "Learning Structured Output Representation using Deep Conditional Generative Models",
    NeurIPS 2015.
    Kingma, Rezende, Mohamed & Welling, "Semi-Supervised Learning with Deep Generative Models", NeurIPS 2014
    (the label as an observed variable of p(x|y, z), their model M2's generative part).
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from vaezoo import bounds
from vaezoo import config as cfg
from vaezoo import networks
from vaezoo.models.vae import VAE
from vaezoo.registry import register_model

tfd = tfp.distributions

#: The keys of a conditional model's input dict.
INPUT_KEYS = ("images", "labels")


@keras.saving.register_keras_serializable(package="vaezoo")
class CVAE(VAE):
    """Conditional VAE: q(z|x, y) and p(x|z, y) conditioned on a one-hot label, p(z) or a learned p(z|y).

    Args:
        num_classes: C, the number of label values (labels are ``0 .. C-1``).
        conditional_prior: learn p(z|y) = N(m_y, diag(s_y^2)), one Gaussian per class (initialised at N(0, I));
            False: the config's ``prior`` for every class (any prior but the VampPrior, whose pseudo-inputs have
            no labels).
        **kwargs: as :class:`vaezoo.VAE`.
    """

    uses_condition = True
    config_constraints = {"num_classes": cfg.Range(2)}

    def __init__(self, num_classes: int = 10, conditional_prior: bool = False, **kwargs):
        prior = kwargs.get("prior", "normal")
        if prior == "vamp":
            raise cfg.ConfigError("cvae cannot use the 'vamp' prior: its pseudo-inputs carry no labels. Use "
                                  "conditional_prior=True for a learned p(z|y), or another prior.")
        if conditional_prior and prior != "normal":
            raise cfg.ConfigError(f"conditional_prior=True replaces the prior by a learned Gaussian per class; "
                                  f"prior must then be 'normal', got {prior!r}.")
        self.num_classes = int(num_classes)
        self.conditional_prior = bool(conditional_prior)
        super().__init__(**kwargs)
        self.fuse_steps = False  # the fused block of steps (vaezoo.fused) knows no labels

    def make_decoder(self):
        """The network [z, one-hot y] ``[B, latent_dim + num_classes]`` -> raw likelihood parameters."""
        return networks.build_decoder(self.architecture, self.data_shape, self.latent_dim + self.num_classes,
                                      self.hidden_units, self.conv_filters, self.activation)

    def build(self, input_shape=None):
        self.posterior_layer.build((None, self.encoder.output_shape[-1] + self.num_classes))
        self.prior_layer.build()
        self.likelihood_layer.build(self.decoder.output_shape)
        if self.conditional_prior and not hasattr(self, "prior_loc"):
            shape = (self.num_classes, self.latent_dim)
            self.prior_loc = self.add_weight(name="prior_loc", shape=shape, initializer="zeros")
            self.prior_log_scale = self.add_weight(name="prior_log_scale", shape=shape, initializer="zeros")
        self.built = True

    # ---- labels ------------------------------------------------------------------------------

    def label_vector(self, labels) -> tf.Tensor:
        """Labels as rows of class probabilities ``[B, num_classes]`` (float32): integer classes ``[B]`` (or
        ``[B, 1]``) are one-hot encoded, probability rows pass. Raises naming the bad value (eagerly)."""
        labels = tf.convert_to_tensor(labels)
        if labels.dtype.is_integer:
            if labels.shape.rank == 2 and labels.shape[-1] == 1:
                labels = labels[:, 0]
            if labels.shape.rank != 1:
                raise ValueError(f"{self.name} takes integer labels of shape (batch,), got shape {tuple(labels.shape)}.")
            if tf.executing_eagerly():
                values = labels.numpy()
                bad = values[(values < 0) | (values >= self.num_classes)]
                if bad.size:
                    raise ValueError(f"{self.name} has num_classes={self.num_classes}: labels must lie in 0..."
                                     f"{self.num_classes - 1}, got {int(bad[0])}"
                                     + (" (an unlabelled example: this model needs every label)" if bad[0] == -1 else "")
                                     + ".")
            return tf.one_hot(tf.cast(labels, tf.int32), self.num_classes, dtype=tf.float32)
        if labels.dtype.is_floating:
            if labels.shape.rank != 2 or labels.shape[-1] != self.num_classes:
                raise ValueError(f"{self.name} takes integer labels (batch,) or class probabilities (batch, "
                                 f"{self.num_classes}), got floats of shape {tuple(labels.shape)}.")
            labels = tf.cast(labels, tf.float32)
            if tf.executing_eagerly():
                values = labels.numpy()
                if values.size and (values.min() < 0 or not np.allclose(values.sum(-1), 1.0, atol=1e-4)):
                    raise ValueError(f"{self.name}: float labels must be rows of class probabilities (>= 0, each "
                                     "row summing to 1), such as one-hot rows.")
            return labels
        raise TypeError(f"{self.name} takes integer class labels, got dtype {labels.dtype.name}.")

    def split_inputs(self, inputs, labels=None) -> tuple[tf.Tensor, tf.Tensor]:
        """``(images [B, *data_shape], label rows [B, num_classes])`` from ``{"images": x, "labels": y}``, an
        ``(x, y)`` pair or images with ``labels``; raises naming what is missing or mismatched."""
        if isinstance(inputs, dict):
            unknown = sorted(set(inputs) - set(INPUT_KEYS))
            if unknown or "images" not in inputs:
                raise ValueError(f"{self.name} takes a dict with keys {list(INPUT_KEYS)}, got {sorted(inputs)}.")
            if labels is None:
                labels = inputs.get("labels")
            inputs = inputs["images"]
        elif isinstance(inputs, (tuple, list)) and len(inputs) == 2 and labels is None:
            inputs, labels = inputs
        if labels is None:
            raise ValueError(f"{self.name} models p(x | y): give the labels, {{'images': x, 'labels': y}} (or "
                             "(x, y) batches to fit and evaluate).")
        x = self.check_inputs(inputs)
        y = self.label_vector(labels)
        self._check_lengths(x, y)
        return x, y

    def _check_lengths(self, x, y, what="images"):
        n, m = x.shape[0], y.shape[0]
        if n is not None and m is not None and n != m:
            raise ValueError(f"{self.name} got {n} {what} but {m} labels; give one label per example.")

    def _unpack(self, data):
        x = super()._unpack(data)
        return x["images"] if isinstance(x, dict) and "images" in x else x

    def _condition(self, data):
        x, y, _ = keras.utils.unpack_x_y_sample_weight(data)
        if isinstance(x, dict) and "labels" in x:
            y = x["labels"]
        if y is None:
            raise ValueError(f"{self.name} models p(x | y): give (images, labels) batches (a data set loaded with "
                             "labels=True, or fit(x, y)).")
        return self.label_vector(y)

    def _check_first_batch(self, x):
        super()._check_first_batch(x)
        if isinstance(x, tf.data.Dataset):
            for batch in x.take(1):
                self._validate_inputs(self._unpack(batch), self._condition(batch))
        elif isinstance(x, dict):
            self._validate_inputs(x)

    def _validate_inputs(self, inputs, labels=None):
        """Raise, naming the problem, if ``inputs`` (and ``labels``) are not what the model takes."""
        self.split_inputs(inputs, labels)

    def _checked_labels(self, labels) -> tf.Tensor:
        """The labels as the model reads them (raises naming a bad value): here rows of class probabilities."""
        return self.label_vector(labels)

    def _check_labels_of(self, x, y):
        if y is not None and not isinstance(x, tf.data.Dataset):
            y = self._checked_labels(y)
            n = len(x["images"] if isinstance(x, dict) else x)
            if n != y.shape[0]:
                raise ValueError(f"{self.name} got {n} images but {y.shape[0]} labels; give one label per example.")

    def fit(self, x=None, y=None, *args, **kwargs):
        self._check_labels_of(x, y)
        return super().fit(x, y, *args, **kwargs)

    def evaluate(self, x=None, y=None, *args, **kwargs):
        self._check_labels_of(x, y)
        return super().evaluate(x, y, *args, **kwargs)

    # ---- the conditioned networks and prior --------------------------------------------------

    def _require(self, condition):
        if condition is None:
            raise ValueError(f"{self.name} models p(x | y): the labels are missing.")
        return condition

    def posterior_parameters(self, x, training=False, condition=None) -> tuple:
        """The parameters of q(z|x, y): the encoder's features of x and the label row, into q's layer."""
        condition = self._require(condition)
        features = self.encoder(self.check_inputs(x), training=training)
        return self.posterior_layer.parameters(tf.concat([features, tf.cast(condition, features.dtype)], -1))

    def decoder_parameters(self, z, training=False, seed=None, condition=None):
        """Raw parameters of p(x|z, y) for z ``[..., B, latent_dim]`` and label rows ``[B, num_classes]``."""
        condition = self._require(condition)
        lead = tf.shape(z)[:-1]
        y = tf.broadcast_to(tf.cast(condition, z.dtype), tf.concat([lead, [self.num_classes]], 0))
        inputs = tf.concat([tf.reshape(z, [-1, self.latent_dim]), tf.reshape(y, [-1, self.num_classes])], -1)
        params = self.decoder(inputs, training=training)
        return tf.reshape(params, tf.concat([lead, self.data_shape], axis=0))

    def prior_distribution(self, condition=None):
        """p(z|y): the config's prior, or (``conditional_prior``) N(m_y, diag(s_y^2)) with batch ``[B]``."""
        if not self.conditional_prior:
            return self.prior_layer()
        y = self._require(condition)
        loc = tf.matmul(y, self.prior_loc)
        return tfd.Independent(tfd.Normal(loc, tf.exp(tf.matmul(y, self.prior_log_scale))), reinterpreted_batch_ndims=1)

    def prior_log_prob(self, z, condition=None):
        if not self.conditional_prior:
            return self.prior_layer.log_prob(z)
        return self.prior_distribution(condition).log_prob(z)

    def _prior_from_noise(self, noise: dict, y):
        if not self.conditional_prior:
            return self.prior_layer.from_noise(**noise)
        return tf.matmul(y, self.prior_loc) + tf.exp(tf.matmul(y, self.prior_log_scale)) * noise["noise"]

    # ---- public API --------------------------------------------------------------------------

    def posterior_distribution(self, inputs, training=False, labels=None):
        """q(z|x, y) of ``{"images": x, "labels": y}``."""
        x, y = self.split_inputs(inputs, labels)
        return self.posterior_layer.distribution(*self.posterior_parameters(x, training=training, condition=y))

    def call(self, inputs, training=False):
        """Reconstruction mean E[x|z, y] of ``{"images": x, "labels": y}``: z ~ q(z|x, y) when training, its
        mean otherwise."""
        x, y = self.split_inputs(inputs)
        params = self.posterior_parameters(x, training=training, condition=y)
        if training:
            z = self.posterior_sample(params, 1, tf.shape(params[0])[0])[0][0]
        else:
            z = self.posterior_layer.point(params)
        return self.likelihood_distribution(z, training=training, condition=y).mean()

    def encode(self, inputs, labels=None):
        """The parameters of q(z|x, y) (as :meth:`vaezoo.VAE.encode`) of ``{"images": x, "labels": y}``."""
        x, y = self.split_inputs(inputs, labels)
        return self.posterior_parameters(x, condition=y)

    def code(self, inputs, labels=None):
        """The posterior mean of z given x and y, ``[B, latent_dim]``: the style the label does not explain."""
        return self.posterior_layer.point(self.encode(inputs, labels))

    def decode(self, z, labels=None):
        """E[x|z, y] for z ``[B, latent_dim]`` and labels ``[B]`` (or probability rows)."""
        if labels is None:
            raise ValueError(f"{self.name} decodes p(x | z, y): pass labels=, one per row of z.")
        z = tf.convert_to_tensor(z, tf.float32)
        y = self.label_vector(labels)
        self._check_lengths(z, y, what="codes")
        return self.likelihood_distribution(z, condition=y).mean()

    def reconstruct(self, inputs, labels=None):
        """Decode the posterior mean of x under its label."""
        x, y = self.split_inputs(inputs, labels)
        return self({"images": x, "labels": y}, training=False)

    def default_labels(self, n: int) -> np.ndarray:
        """The labels ``sample(n)`` draws for: the classes in turn, 0, 1, ..., C-1, 0, 1, ..."""
        return np.arange(n, dtype="int32") % self.num_classes

    def sample(self, n: int, seed=None, mean: bool = True, labels=None):
        """``n`` samples of p(x|y): z ~ p(z|y), then E[x|z, y] (``mean=True``) or x ~ p(x|z, y), for ``labels``
        (``[n]`` classes; default :meth:`default_labels`, each class in turn)."""
        n = self.check_count(n)
        labels = self.default_labels(n) if labels is None else labels
        y = self.label_vector(labels)
        if y.shape[0] != n:
            raise ValueError(f"sample({n}) needs {n} labels, got {y.shape[0]}.")
        seed = self.next_seed(seed)
        z = self._prior_from_noise(self.prior_layer.draw_noise(n, seed), y)
        px = self.likelihood_distribution(z, condition=y)
        return px.mean() if mean else px.sample(seed=tf.reverse(seed, [0]))

    def sample_from_noise(self, labels=None, **noise):
        """E[x|z, y] for z = the prior's transform of ``noise`` (see :meth:`vaezoo.VAE.sample_from_noise`) and
        ``labels``, one per row."""
        if labels is None:
            raise ValueError(f"{self.name} samples p(x | y): pass labels=, one per row of the noise.")
        y = self.label_vector(labels)
        return self.likelihood_distribution(self._prior_from_noise(noise, y), condition=y).mean()

    def compute_terms(self, x, training=False, seed=None, condition=None):
        if condition is None:
            x, condition = self.split_inputs(x)
        else:
            condition = self.label_vector(condition)
        return super().compute_terms(x, training=training, seed=seed, condition=condition)

    def elbo(self, inputs, seed=None, labels=None):
        """The conditional ELBO per example, a bound on log p(x|y), ``[B]`` (nats)."""
        x, y = self.split_inputs(inputs, labels)
        return self.compute_terms(x, training=False, seed=seed, condition=y)["elbo"]

    def log_weights(self, inputs, num_samples: int, seed=None, labels=None):
        """log p(x|z_k, y) + log p(z_k|y) - log q(z_k|x, y), z_k ~ q(z|x, y): ``[K, B]``; their log-mean-exp
        estimates log p(x|y) (:func:`vaezoo.evaluate.log_likelihood`)."""
        x, y = self.split_inputs(inputs, labels)
        _, log_px, log_pz, log_qz = self.sample_log_probs(x, num_samples, seed=seed, condition=y)
        return bounds.log_weights(log_px, log_pz, log_qz)

    def traverse(self, inputs, steps: int = 9, limit: float = 3.0, labels=None):
        """A latent traversal of one labelled example (as :meth:`vaezoo.VAE.traverse`), decoded under its label:
        ``[latent_dim, steps, *data_shape]``."""
        steps = self.check_count(steps, "steps")
        x, y = self.split_inputs(inputs, labels)
        mean = np.asarray(self.code(x[:1], y[:1]))
        values = np.linspace(-limit, limit, steps, dtype="float32")
        z = np.repeat(mean, self.latent_dim * steps, axis=0).reshape(self.latent_dim, steps, -1)
        z[np.arange(self.latent_dim), :, np.arange(self.latent_dim)] = values
        rows = np.repeat(np.asarray(y[:1]), self.latent_dim * steps, axis=0)
        images = self.decode(z.reshape(-1, self.latent_dim), rows)
        return np.asarray(images).reshape(self.latent_dim, steps, *self.data_shape)

    def class_grid(self, per_class: int = 10, seed=None, classes=None) -> np.ndarray:
        """Samples with one row per class: ``[len(classes), per_class, *data_shape]`` (default every class)."""
        per_class = self.check_count(per_class, "per_class")
        classes = np.arange(self.num_classes) if classes is None else np.asarray(classes, "int32")
        labels = np.repeat(classes, per_class).astype("int32")
        drawn = self.sample(len(labels), seed=seed, labels=labels)
        return np.asarray(drawn).reshape(len(classes), per_class, *self.data_shape)

    def endpoints(self):
        """The VAE's signatures, each taking the labels (int32 ``[B]``) beside its other inputs:
        ``serving_default`` and ``encode`` (images, labels), ``decode`` (z, labels), ``sample`` (labels: one
        image per label), ``sample_from_noise`` (labels and the prior's noise) and ``elbo`` (images, labels,
        seed)."""
        f32 = tf.float32
        images = {"images": tf.TensorSpec([None, *self.data_shape], f32)}
        labels = {"labels": tf.TensorSpec([None], tf.int32)}
        noise = {k: tf.TensorSpec([None, *shape], f32) for k, shape in self.prior_layer.noise_shapes().items()}

        def y_of(labels):
            return tf.one_hot(labels, self.num_classes, dtype=f32)

        def generated(labels, noise):
            y = y_of(labels)
            z = self._prior_from_noise(noise, y)
            return {"images": self.likelihood_distribution(z, condition=y).mean(), "z": z}

        def encode(images, labels):
            params = self.posterior_parameters(images, condition=y_of(labels))
            return dict(zip(self.posterior_layer.parameter_names, params))

        def reconstruct(images, labels):
            y = y_of(labels)
            z = self.posterior_layer.point(self.posterior_parameters(images, condition=y))
            return {"reconstruction": self.likelihood_distribution(z, condition=y).mean()}

        def bound(images, labels, seed):
            terms = VAE.compute_terms(self, images, training=False, seed=seed, condition=y_of(labels))
            return {k: terms[k] for k in self.metric_names}

        return {
            "serving_default": (reconstruct, {**images, **labels}),
            "encode": (encode, {**images, **labels}),
            "decode": (lambda z, labels: {"images": self.likelihood_distribution(z, condition=y_of(labels)).mean()},
                       {"z": tf.TensorSpec([None, self.latent_dim], f32), **labels}),
            "sample": (lambda labels: generated(labels, self.prior_layer.draw_noise(tf.shape(labels)[0])), labels),
            "sample_from_noise": (lambda labels, **kw: generated(labels, kw), {**labels, **noise}),
            "elbo": (bound, {**images, **labels, "seed": tf.TensorSpec([2], tf.int32)}),
        }


register_model(CVAE, name="cvae")
register_model(CVAE, name="cvae_conv")
