"""M2, the semi-supervised VAE of Kingma et al. 2014: labels as a partly observed latent variable.

The generative model is p(y) p(z) p(x|y, z) with a uniform p(y) over C classes; inference has a classifier
q(y|x) = Cat(pi(x)) and q(z|x, y) (the conditional VAE's encoder, :class:`vaezoo.CVAE`). A labelled example
(x, y) has the bound

.. math:: \\log p(x, y) \\ge \\mathcal{L}(x, y) = \\mathbb{E}_{q(z|x,y)}[\\log p(x|y,z)] + \\log p(y)
          - \\mathrm{KL}(q(z|x,y) \\| p(z)),

and an unlabelled one sums the label out under the classifier (every class in turn, not a sample),

.. math:: \\log p(x) \\ge \\mathcal{U}(x) = \\sum_y q(y|x)\\, \\mathcal{L}(x, y) + \\mathcal{H}(q(y|x)).

Training maximises the mean of these bounds over the batch plus ``alpha`` times the classifier's log-likelihood
of the labelled examples (the paper's J^alpha, eq. 9), so that q(y|x) also learns from the labels directly:

.. math:: \\mathrm{loss} = -\\frac{1}{B}\\sum_i \\mathrm{bound}_i
          + \\alpha \\, \\frac{1}{B_l} \\sum_{i \\in \\mathrm{labelled}} -\\log q(y_i|x_i).

In the reference code the classification term is alpha = 0.1 times the mean over the labelled data, the bounds
a mean over all examples; here the bound is the mean over the batch as it comes, so a batch that over-samples the
few labelled examples (:func:`vaezoo.data.semi_supervised`: 10 labelled beside 100 unlabelled) weighs their
L(x, y) more than the data set's proportion would.

Labels are integers; :data:`vaezoo.data.UNLABELED` (-1) marks an unlabelled example, and batches without
labels are all unlabelled. ``classify(x)`` gives q(y|x); the test error of ``argmax q(y|x)`` is the paper's
measure (M2 alone, 100 labels on MNIST: 11.97%). Sampling, decoding and the conditional export signatures are the
conditional VAE's (labels in, images out); ``log_weights`` estimates log p(x) with y ~ q(y|x) and z ~ q(z|x, y)
as the importance proposal, so :func:`vaezoo.evaluate.log_likelihood` gives the marginal log p(x).

Example:

>>> import numpy as np, vaezoo
>>> model = vaezoo.get("m2", latent_dim=8, hidden_units=[64], classifier_units=[64])
>>> x = np.zeros((4, 28, 28, 1), "float32"); y = np.array([3, -1, -1, 7])   # two labelled, two not
>>> model.elbo({"images": x, "labels": y}).shape
TensorShape([4])
>>> model.classify(x).shape                                                      # q(y|x)
TensorShape([4, 10])

Reference:
    Kingma, Rezende, Mohamed & Welling, "Semi-Supervised Learning with Deep Generative Models", NeurIPS 2014.
"""

from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf

from vaezoo import bounds
from vaezoo import config as cfg
from vaezoo import distribute
from vaezoo import layers as dl
from vaezoo.models.conditional import INPUT_KEYS, CVAE
from vaezoo.models.vae import VAE
from vaezoo.registry import register_model

#: The label of an unlabelled example (as in :mod:`vaezoo.data`).
UNLABELED = -1


@keras.saving.register_keras_serializable(package="vaezoo")
class M2(CVAE):
    """Semi-supervised VAE (Kingma et al. 2014, model M2): p(y) p(z) p(x|y, z), q(y|x) q(z|x, y).

    Args:
        alpha: weight of the classifier's mean log-likelihood of the labelled examples in the loss (the
            reference code's 0.1).
        classifier_units: hidden widths of the classifier q(y|x) (an MLP on the flattened image; the paper: one
            layer of 500).
        num_labels: how many training examples keep their label when ``vaezoo train`` builds the batches
            (:func:`vaezoo.data.semi_supervised`: the same number per class, the rest unlabelled; the paper's
            MNIST runs: 100); 0 keeps every label. The model itself takes any mix of labels.
        **kwargs: as :class:`vaezoo.CVAE` (``num_classes``, the encoder and decoder, the likelihood). The prior
            over z is the config's; over y uniform.
    """

    labels_optional = True
    config_constraints = {"alpha": cfg.NON_NEGATIVE, "classifier_units": cfg.AT_LEAST_1, "num_labels": cfg.NON_NEGATIVE}

    def __init__(self, alpha: float = 0.1, classifier_units: tuple[int, ...] = (500,), num_labels: int = 100,
                 **kwargs):
        if kwargs.get("conditional_prior"):
            raise cfg.ConfigError("m2 has p(z) independent of y (the paper's model): conditional_prior must be "
                                  "false.")
        if kwargs.get("architecture", "mlp") != "mlp":
            raise cfg.ConfigError(f"m2 is built with MLPs (the paper's); architecture must be 'mlp', got "
                                  f"{kwargs.get('architecture')!r}.")
        self.alpha = float(alpha)
        self.classifier_units = tuple(int(u) for u in classifier_units)
        self.num_labels = int(num_labels)
        self.metric_names = ("elbo", "reconstruction", "kl", "classification", "labelled")
        super().__init__(**kwargs)
        if self.gradient_estimator != "reparameterization":
            raise cfg.ConfigError(f"m2 trains with the reparameterised gradient (its classifier's gradient comes "
                                  f"through the exact sum over labels): gradient_estimator must be "
                                  f"'reparameterization', got {self.gradient_estimator!r}.")
        if self.num_samples != 1:
            raise cfg.ConfigError(f"m2 sums the label out exactly and draws one z per class: num_samples must be "
                                  f"1, got {self.num_samples}.")

    def build(self, input_shape=None):
        if not hasattr(self, "classifier"):  # built by the VAE's __init__, where the networks are made
            self.classifier = keras.Sequential(
                [keras.layers.Flatten(),
                 *[keras.layers.Dense(u, activation=self.activation) for u in self.classifier_units],
                 keras.layers.Dense(self.num_classes, dtype="float32")], name="classifier")
            self.classifier.build((None, *self.data_shape))
        super().build(input_shape)

    # ---- labels (some missing) ---------------------------------------------------------------

    def label_ids(self, labels) -> tf.Tensor:
        """Integer labels ``[B]`` (int32) in ``-1 .. num_classes - 1`` (-1: unlabelled), from integers or from rows
        of class probabilities (each row's most probable class, so one-hot rows give their class); raises naming a
        bad value (eagerly)."""
        labels = tf.convert_to_tensor(labels)
        if labels.dtype.is_floating:
            return tf.argmax(self.label_vector(labels), axis=-1, output_type=tf.int32)
        if not labels.dtype.is_integer:
            raise TypeError(f"{self.name} takes integer labels (-1 for an unlabelled example), got dtype "
                            f"{labels.dtype.name}.")
        if labels.shape.rank == 2 and labels.shape[-1] == 1:
            labels = labels[:, 0]
        if labels.shape.rank != 1:
            raise ValueError(f"{self.name} takes integer labels of shape (batch,), got shape {tuple(labels.shape)}.")
        if tf.executing_eagerly():
            values = labels.numpy()
            bad = values[(values < UNLABELED) | (values >= self.num_classes)]
            if bad.size:
                raise ValueError(f"{self.name} has num_classes={self.num_classes}: labels must lie in 0..."
                                 f"{self.num_classes - 1}, or be {UNLABELED} for an unlabelled example; got "
                                 f"{int(bad[0])}.")
        return tf.cast(labels, tf.int32)

    def _labels_of(self, inputs, labels=None):
        """``(images, label ids or None)`` from a dict, an ``(x, y)`` pair or images."""
        if isinstance(inputs, dict):
            unknown = sorted(set(inputs) - set(INPUT_KEYS))
            if unknown or "images" not in inputs:
                raise ValueError(f"{self.name} takes images or a dict with keys {list(INPUT_KEYS)}, got "
                                 f"{sorted(inputs)}.")
            labels = inputs.get("labels") if labels is None else labels
            inputs = inputs["images"]
        elif isinstance(inputs, (tuple, list)) and len(inputs) == 2 and labels is None:
            inputs, labels = inputs
        x = self.check_inputs(inputs)
        if labels is None:
            return x, None
        y = self.label_ids(labels)
        self._check_lengths(x, y)
        return x, y

    def split_inputs(self, inputs, labels=None):
        """``(images, label rows)`` as :meth:`vaezoo.CVAE.split_inputs`, but a missing label (-1, or no labels at
        all) is the classifier's most probable class, so ``encode``, ``reconstruct`` and ``traverse`` work on
        unlabelled images."""
        if isinstance(inputs, dict) and labels is None:
            labels = inputs.get("labels")
        if labels is not None and tf.convert_to_tensor(labels).dtype.is_floating:
            return super().split_inputs(inputs, labels)  # rows of class probabilities, as the CVAE takes them
        x, y = self._labels_of(inputs, labels)
        guess = tf.argmax(self.classify(x), axis=-1, output_type=tf.int32)
        y = guess if y is None else tf.where(y >= 0, y, guess)
        return x, tf.one_hot(y, self.num_classes, dtype=tf.float32)

    def _condition(self, data):
        x, y, _ = keras.utils.unpack_x_y_sample_weight(data)
        if isinstance(x, dict) and "labels" in x:
            y = x["labels"]
        return None if y is None else self.label_ids(y)

    def _validate_inputs(self, inputs, labels=None):
        self._labels_of(inputs, labels)

    def _checked_labels(self, labels) -> tf.Tensor:
        return self.label_ids(labels)

    # ---- the classifier ----------------------------------------------------------------------

    def classifier_logits(self, x, training=False):
        """Logits of q(y|x), ``[B, num_classes]`` (float32)."""
        return tf.cast(self.classifier(self.check_inputs(x), training=training), tf.float32)

    def classify(self, inputs, training=False):
        """q(y|x): class probabilities ``[B, num_classes]`` of images (or the images of a dict)."""
        x = inputs["images"] if isinstance(inputs, dict) else inputs
        return tf.nn.softmax(self.classifier_logits(x, training=training), axis=-1)

    # ---- the bound ---------------------------------------------------------------------------

    def compute_terms(self, x, training=False, seed=None, condition=None):
        """Per-example terms: ``elbo`` is L(x, y) for a labelled example and U(x) for an unlabelled one (see the
        module docstring), ``reconstruction`` and ``kl`` its parts (``kl`` includes -log p(y), and for an
        unlabelled example KL(q(y|x) || p(y))); ``classification`` is the mean -log q(y|x) of the batch's
        labelled examples and ``labelled`` their fraction (scalars)."""
        if condition is None and isinstance(x, dict):
            x, condition = self._labels_of(x)
        x = self.check_inputs(x)
        batch, c = tf.shape(x)[0], self.num_classes
        labels = tf.fill([batch], UNLABELED) if condition is None else self.label_ids(condition)
        log_qy = tf.nn.log_softmax(self.classifier_logits(x, training=training), axis=-1)  # [B, C]
        # Every example under every class: row i * C + c (each example's rows together, so that the noise drawn
        # by example stays the same under any tf.distribute split of the batch).
        rows = tf.repeat(x, c, axis=0)
        classes = tf.tile(tf.eye(c, dtype=tf.float32), [batch, 1])
        per_class = VAE.compute_terms(self, rows, training=training, seed=seed, condition=classes)
        reconstruction = tf.reshape(per_class["reconstruction"], [batch, c])
        kl_z = tf.reshape(per_class["kl"], [batch, c])
        log_py = -math.log(c)
        labelled = labels >= 0
        safe = tf.maximum(labels, 0)
        # Labelled: the bound at the label.
        rec_l = tf.gather(reconstruction, safe, batch_dims=1)
        kl_l = tf.gather(kl_z, safe, batch_dims=1) - log_py
        # Unlabelled: the label summed out under q(y|x), plus KL(q(y|x) || p(y)) = sum q log q - log p(y).
        qy = tf.exp(log_qy)
        rec_u = tf.reduce_sum(qy * reconstruction, axis=-1)
        kl_u = tf.reduce_sum(qy * kl_z, axis=-1) + tf.reduce_sum(qy * log_qy, axis=-1) - log_py
        rec = tf.where(labelled, rec_l, rec_u)
        kl = tf.where(labelled, kl_l, kl_u)
        weights = tf.cast(labelled, tf.float32)
        count = tf.reduce_sum(weights)
        nll_y = -tf.gather(log_qy, safe, batch_dims=1)
        classification = tf.math.divide_no_nan(tf.reduce_sum(weights * nll_y), count)
        terms = {"elbo": -(rec + kl), "reconstruction": rec, "kl": kl, "classification": classification,
                 "labelled": count / tf.cast(batch, tf.float32), "log_qy": log_qy, "z": per_class["z"]}
        return terms

    def objective(self, terms):
        return -tf.reduce_mean(terms["elbo"]) + self.alpha * terms["classification"]

    def gradient_surrogate(self, terms, training=False):
        return tf.constant(0.0)  # reparameterised posteriors only (checked in __init__)

    def log_weights(self, inputs, num_samples: int, seed=None, labels=None):
        """log p(x, y_k, z_k) - log q(y_k|x) - log q(z_k|x, y_k) for y_k ~ q(y|x), z_k ~ q(z|x, y_k): ``[K, B]``;
        their log-mean-exp estimates the marginal log p(x) (any labels given are not used)."""
        x, _ = self._labels_of(inputs, labels)
        seed = self.next_seed(seed)
        batch = tf.shape(x)[0]
        log_qy = tf.nn.log_softmax(self.classifier_logits(x), axis=-1)
        uniform = distribute.replica_rows(
            lambda n: tf.random.stateless_uniform(tf.stack([num_samples, n]), seed), batch, axis=1)
        y = dl.categorical_from_uniform(tf.broadcast_to(log_qy, [num_samples, batch, self.num_classes]), uniform)
        # Sample k of example i is row i * K + k: by example, as above.
        rows = tf.repeat(x, num_samples, axis=0)
        onehot = tf.reshape(tf.one_hot(tf.transpose(y), self.num_classes, dtype=tf.float32), [-1, self.num_classes])
        _, log_px, log_pz, log_qz = self.sample_log_probs(rows, 1, seed=tf.random.experimental.stateless_fold_in(
            seed, 1), condition=onehot)
        log_w = bounds.log_weights(log_px, log_pz, log_qz)  # [1, B * K]
        log_w = tf.transpose(tf.reshape(log_w, [batch, num_samples]))
        log_q_of_y = tf.gather(log_qy, tf.transpose(y), batch_dims=1)  # [B, K]
        return log_w - math.log(self.num_classes) - tf.transpose(log_q_of_y)

    def elbo(self, inputs, seed=None, labels=None):
        """The bound per example ``[B]``: L(x, y) where a label is given, U(x) where it is not (or is -1)."""
        x, y = self._labels_of(inputs, labels)
        return self.compute_terms(x, training=False, seed=seed, condition=y)["elbo"]

    # ---- export ------------------------------------------------------------------------------

    def endpoints(self):
        """The conditional VAE's signatures (labels beside images or codes; see :meth:`vaezoo.CVAE.endpoints`),
        ``elbo`` with the labels (-1: unlabelled) and ``classify`` (images -> ``probabilities`` of q(y|x))."""
        ends = super().endpoints()
        f32 = tf.float32

        def bound(images, labels, seed):
            terms = self.compute_terms(images, training=False, seed=seed, condition=labels)
            return {k: terms[k] for k in ("elbo", "reconstruction", "kl")}

        images = {"images": tf.TensorSpec([None, *self.data_shape], f32)}
        ends["elbo"] = (bound, {**images, "labels": tf.TensorSpec([None], tf.int32),
                                "seed": tf.TensorSpec([2], tf.int32)})
        ends["classify"] = (lambda images: {"probabilities": self.classify(images)}, images)
        return ends


register_model(M2, name="m2")
