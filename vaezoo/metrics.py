"""Sample quality: Frechet and kernel distances and precision/recall in a small classifier's feature space.

Likelihoods say how well a model explains test images; these say how much its *samples* look like them. All
four compare two sets of feature vectors, the 128 pre-activations of the penultimate layer of a small convolutional
classifier trained on the data set's labels and shipped with vaezoo (Inception weights cannot be downloaded
offline, and on MNIST the literature uses a small classifier's features instead):

- FID, the Frechet distance between Gaussians fitted to the two sets (Heusel et al. 2017):

  .. math::

      d^2 = \\lVert \\mu_r - \\mu_g \\rVert^2 + \\operatorname{tr}\\big(\\Sigma_r + \\Sigma_g
            - 2 (\\Sigma_r^{1/2} \\Sigma_g \\Sigma_r^{1/2})^{1/2}\\big).

- KID, the unbiased estimate of the squared MMD with the cubic polynomial kernel
  :math:`k(a, b) = (a^\\top b / d + 1)^3` (Binkowski et al. 2018), averaged over disjoint blocks of the samples,
  with the standard error of that average (the blocks are independent, so it is an honest one). Unlike FID it is
  unbiased: two samples of one distribution give 0 on average, whatever their size.
- Precision and recall (Kynkaanniemi et al. 2019): each set's manifold is the union of balls around its points
  whose radius is the distance to the k-th nearest neighbour in the same set; precision is the fraction of
  generated points inside the real manifold (are the samples realistic?), recall the fraction of real points
  inside the generated manifold (do the samples cover the data?).

Example:

>>> import vaezoo
>>> from vaezoo import data, metrics
>>> model = vaezoo.get("vae", pretrained=True)
>>> real, _ = data.mnist_arrays("test")                     # doctest: +SKIP
>>> quality = metrics.model_sample_quality(model, real / 255.0, classifier="mnist")   # doctest: +SKIP
>>> quality.fid, quality.kid, quality.precision, quality.recall                      # doctest: +SKIP

The classifiers are trained by ``benchmarks/train_classifier.py``; ``vaezoo/weights/classifiers/manifest.json``
holds each one's data shape, test accuracy, command and sha256 (checked on every load).

References: Heusel et al., "GANs Trained by a Two Time-Scale Update Rule Converge to a Local Nash
Equilibrium", NeurIPS 2017. Binkowski et al., "Demystifying MMD GANs", ICLR 2018. Kynkaanniemi et al., "Improved
Precision and Recall Metric for Assessing Generative Models", NeurIPS 2019.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from vaezoo import pretrained

#: The shipped feature classifiers: ``<dataset>.weights.h5`` and their ``manifest.json``.
CLASSIFIERS_DIR = pretrained.SHIPPED_DIR / "classifiers"
#: The layer whose output is the feature vector.
FEATURE_LAYER = "features"


class MetricsError(ValueError):
    """Inputs the metrics cannot use: an unknown classifier, images of the wrong shape or range, too few samples."""


# --------------------------------------------------------------------------------------------
# The feature classifier
# --------------------------------------------------------------------------------------------


def build_classifier(data_shape, num_classes: int, feature_units: int = 128):
    """The small convolutional classifier whose ``features`` layer defines the metrics' feature space.

    3x3 ReLU convolutions of 32 and 64 filters, each followed by 2x2 max-pooling, a third of 32 filters
    (valid padding), a ``features`` dense layer (``feature_units``; its ReLU is a layer of its own, so that the
    features are the pre-activations), dropout (training only) and the class logits: about 125,000 weights at
    28x28.

    Why pre-activations: after the ReLU, inputs the classifier has never seen (uniform noise) map near the origin,
    inside the k-nearest-neighbour balls of weakly activated real digits, and uniform noise scored precision
    0.9998 against the MNIST test set; on the pre-activations it scores 0.089, while MNIST train against test
    keeps 0.85 / 0.87 (precision / recall) in both (measured with the shipped classifier, 5,000 images each).
    """
    import keras

    inputs = keras.Input(tuple(data_shape), name="images")
    h = keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="conv1")(inputs)
    h = keras.layers.MaxPooling2D(2, name="pool1")(h)
    h = keras.layers.Conv2D(64, 3, padding="same", activation="relu", name="conv2")(h)
    h = keras.layers.MaxPooling2D(2, name="pool2")(h)
    h = keras.layers.Conv2D(32, 3, activation="relu", name="conv3")(h)
    h = keras.layers.Flatten(name="flatten")(h)
    h = keras.layers.Dense(feature_units, name=FEATURE_LAYER)(h)  # the features: its pre-activations
    h = keras.layers.Activation("relu", name="features_relu")(h)
    h = keras.layers.Dropout(0.25, name="dropout")(h)
    logits = keras.layers.Dense(num_classes, name="logits")(h)
    return keras.Model(inputs, logits, name="feature_classifier")


def classifier_manifest(folder: str | Path | None = None) -> dict[str, dict[str, Any]]:
    """The shipped classifiers' entries, by data set name."""
    path = Path(folder or CLASSIFIERS_DIR) / "manifest.json"
    if not path.exists():
        return {}
    return json.loads(path.read_text())["classifiers"]


def classifier_names(folder: str | Path | None = None) -> list[str]:
    """The data sets with a shipped feature classifier."""
    return sorted(classifier_manifest(folder))


def classifier_info(name: str, folder: str | Path | None = None) -> dict[str, Any]:
    """One classifier's manifest entry (data shape, classes, test accuracy, command, sha256)."""
    entries = classifier_manifest(folder)
    if name not in entries:
        raise MetricsError(f"No feature classifier {name!r}; valid choices: {', '.join(sorted(entries)) or 'none'}.")
    return entries[name]


#: Data sets whose images a shipped classifier reads, beyond its own name.
CLASSIFIER_OF = {"binarized_mnist": "mnist"}


def default_classifier(dataset) -> str:
    """The shipped classifier for images of ``dataset`` (``"mnist"`` for MNIST and binarized MNIST, ``"sprites"``),
    or a :class:`MetricsError` listing the classifiers when there is none."""
    name = CLASSIFIER_OF.get(dataset, dataset) if isinstance(dataset, str) else None
    if name not in classifier_manifest():
        raise MetricsError(f"No feature classifier for the data {dataset!r}; name one of: "
                           f"{', '.join(classifier_names()) or 'none'} (its images must have the same shape).")
    return name


def load_classifier(name: str, folder: str | Path | None = None):
    """The shipped classifier ``name`` (its full model, logits out), its weights checked against the sha256."""
    entry = classifier_info(name, folder)
    path = Path(folder or CLASSIFIERS_DIR) / entry["file"]
    if not path.exists():
        raise pretrained.PretrainedError(f"The weights of classifier {name!r} are missing: {path} (reinstall vaezoo).")
    actual = pretrained.sha256(path)
    if actual != entry["sha256"]:
        raise pretrained.PretrainedError(f"The weights of classifier {name!r} are damaged: {path} has sha256 "
                                         f"{actual}, the manifest says {entry['sha256']} (reinstall vaezoo).")
    model = build_classifier(entry["data_shape"], len(entry["class_names"]), entry["feature_units"])
    model.load_weights(path)
    return model


class FeatureExtractor:
    """Maps images ``[N, H, W, C]`` in [0, 1] to the classifier's ``features`` layer, ``[N, feature_units]``.

    Args:
        classifier: a shipped classifier's name (``"mnist"``, ``"sprites"``) or a Keras classifier with a
            ``features`` layer.
        batch_size: images per forward pass.
    """

    def __init__(self, classifier="mnist", batch_size: int = 500):
        import keras

        self.name = classifier if isinstance(classifier, str) else getattr(classifier, "name", "classifier")
        model = load_classifier(classifier) if isinstance(classifier, str) else classifier
        self.classifier = model
        self.data_shape = tuple(int(d) for d in model.input_shape[1:])
        self.model = keras.Model(model.input, model.get_layer(FEATURE_LAYER).output)
        self.batch_size = int(batch_size)

    def check(self, images, what: str = "images") -> np.ndarray:
        """``images`` as float32 ``[N, *data_shape]`` in [0, 1], or a :class:`MetricsError` naming the problem."""
        x = np.asarray(images)
        if x.ndim == len(self.data_shape) and self.data_shape[-1] == 1:
            x = x[..., None]
        if x.ndim != len(self.data_shape) + 1 or tuple(x.shape[1:]) != self.data_shape:
            raise MetricsError(f"{what} have shape {tuple(x.shape)}; the {self.name} classifier reads "
                               f"[N, {', '.join(map(str, self.data_shape))}].")
        if not np.issubdtype(x.dtype, np.floating) and not np.issubdtype(x.dtype, np.integer) and x.dtype != bool:
            raise MetricsError(f"{what} have dtype {x.dtype}; expected floats in [0, 1].")
        x = x.astype(np.float32)
        if x.size and (float(x.min()) < 0.0 or float(x.max()) > 1.0):
            raise MetricsError(f"{what} range over [{float(x.min()):g}, {float(x.max()):g}]; the metrics expect "
                               f"[0, 1] (divide 0..255 images by 255).")
        if len(x) == 0:
            raise MetricsError(f"{what} are empty.")
        return x

    def _batched(self, network, x) -> np.ndarray:
        return np.concatenate([np.asarray(network(x[i:i + self.batch_size], training=False), np.float64)
                               for i in range(0, len(x), self.batch_size)])

    def __call__(self, images, what: str = "images") -> np.ndarray:
        return self._batched(self.model, self.check(images, what))

    def predict(self, images) -> np.ndarray:
        """Class probabilities ``[N, num_classes]``."""
        import keras

        return np.asarray(keras.ops.softmax(self._batched(self.classifier, self.check(images)), axis=-1))


# --------------------------------------------------------------------------------------------
# Distances between feature sets
# --------------------------------------------------------------------------------------------


def _features(x, what: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise MetricsError(f"{what} must be a [N, D] array of feature vectors; got shape {x.shape}.")
    return x


def gaussian_statistics(features) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance (unbiased, float64) of ``[N, D]`` features."""
    x = _features(features, "features")
    if len(x) < 2:
        raise MetricsError(f"a covariance needs at least 2 feature vectors; got {len(x)}.")
    return x.mean(0), np.cov(x, rowvar=False)


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """Squared Frechet (2-Wasserstein) distance between N(mu1, sigma1) and N(mu2, sigma2).

    The trace of the matrix square root is computed as the sum of the square roots of the eigenvalues of the
    symmetric matrix :math:`\\Sigma_1^{1/2} \\Sigma_2 \\Sigma_1^{1/2}` (same eigenvalues as
    :math:`\\Sigma_1 \\Sigma_2`), which stays real and stable for the singular covariances of ReLU features.
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (mu1.size, mu1.size):
        raise MetricsError(f"mismatched statistics: means {mu1.shape} and {mu2.shape}, covariances {sigma1.shape} "
                           f"and {sigma2.shape}.")
    w, v = np.linalg.eigh((sigma1 + sigma1.T) / 2)
    root1 = (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T
    middle = root1 @ sigma2 @ root1
    trace_root = np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0.0, None)).sum()
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_root)


def fid(real_features, fake_features) -> float:
    """Frechet distance between Gaussians fitted to two ``[N, D]`` feature sets (FID, Heusel et al. 2017)."""
    return frechet_distance(*gaussian_statistics(real_features), *gaussian_statistics(fake_features))


@dataclasses.dataclass(frozen=True)
class KernelDistance:
    """KID: the mean of the blocks' unbiased squared-MMD estimates and its standard error."""

    value: float
    standard_error: float
    num_blocks: int
    block_size: int


def polynomial_kernel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The cubic polynomial kernel of KID, :math:`(a^\\top b / d + 1)^3`."""
    return (a @ b.T / a.shape[1] + 1.0) ** 3


def mmd2_unbiased(x, y) -> float:
    """The unbiased estimate of the squared MMD between two samples with the cubic polynomial kernel."""
    x, y = _features(x, "first features"), _features(y, "second features")
    m, n = len(x), len(y)
    if m < 2 or n < 2:
        raise MetricsError(f"the unbiased MMD needs at least 2 vectors per set; got {m} and {n}.")
    kxx, kyy, kxy = polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)
    return float((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
                 - 2.0 * kxy.mean())


def kid(real_features, fake_features, num_blocks: int = 10, seed: int = 0) -> KernelDistance:
    """Kernel Inception Distance (Binkowski et al. 2018) over ``num_blocks`` disjoint random blocks.

    Each block pairs ``min(N_real, N_fake) // num_blocks`` real with as many generated vectors; the blocks do not
    overlap, so their estimates are independent and ``standard_error`` is std / sqrt(num_blocks).
    """
    real, fake = _features(real_features, "real features"), _features(fake_features, "generated features")
    size = min(len(real), len(fake)) // num_blocks
    if num_blocks < 2 or size < 2:
        raise MetricsError(f"KID with {num_blocks} blocks needs at least {2 * max(num_blocks, 2)} vectors per set "
                           f"(and num_blocks >= 2); got {len(real)} real and {len(fake)} generated.")
    rng = np.random.default_rng(seed)
    real_order, fake_order = rng.permutation(len(real)), rng.permutation(len(fake))
    values = np.array([mmd2_unbiased(real[real_order[b * size:(b + 1) * size]],
                                     fake[fake_order[b * size:(b + 1) * size]]) for b in range(num_blocks)])
    return KernelDistance(float(values.mean()), float(values.std(ddof=1) / math.sqrt(num_blocks)), num_blocks, size)


def _squared_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.maximum((a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T, 0.0)


def _radii(x: np.ndarray, k: int, chunk: int) -> np.ndarray:
    """Squared distance from each vector to its k-th nearest neighbour in the same set (itself excluded)."""
    out = np.empty(len(x))
    for i in range(0, len(x), chunk):
        d = _squared_distances(x[i:i + chunk], x)
        out[i:i + chunk] = np.partition(d, k, axis=1)[:, k]  # index 0 is the point itself (distance 0)
    return out


def _inside(points: np.ndarray, centres: np.ndarray, radii: np.ndarray, chunk: int) -> np.ndarray:
    """Whether each of ``points`` lies in some ball (centre, radius) of the manifold."""
    out = np.empty(len(points), dtype=bool)
    for i in range(0, len(points), chunk):
        out[i:i + chunk] = (_squared_distances(points[i:i + chunk], centres) <= radii[None, :]).any(1)
    return out


def precision_recall(real_features, fake_features, k: int = 3, chunk: int = 1000) -> tuple[float, float]:
    """Improved precision and recall (Kynkaanniemi et al. 2019) with k-nearest-neighbour manifolds."""
    real, fake = _features(real_features, "real features"), _features(fake_features, "generated features")
    if k < 1 or min(len(real), len(fake)) <= k:
        raise MetricsError(f"precision/recall with k={k} needs k >= 1 and more than k vectors per set; got "
                           f"{len(real)} real and {len(fake)} generated.")
    precision = _inside(fake, real, _radii(real, k, chunk), chunk).mean()
    recall = _inside(real, fake, _radii(fake, k, chunk), chunk).mean()
    return float(precision), float(recall)


# --------------------------------------------------------------------------------------------
# Sample quality of images and of models
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SampleQuality:
    """FID, KID (with its standard error), precision and recall of generated images against real ones."""

    fid: float
    kid: float
    kid_standard_error: float
    precision: float
    recall: float
    num_real: int
    num_generated: int
    classifier: str
    k: int = 3

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def sample_quality(generated, real, classifier="mnist", k: int = 3, kid_blocks: int = 10, seed: int = 0,
                   real_features: np.ndarray | None = None) -> SampleQuality:
    """All four metrics of ``generated`` images against ``real`` images (both ``[N, H, W, C]`` in [0, 1]).

    ``real_features`` (the extractor's output for ``real``) skips recomputing them when one real set is compared
    with many models.
    """
    extractor = classifier if isinstance(classifier, FeatureExtractor) else FeatureExtractor(classifier)
    fake = extractor(generated, "generated images")
    ref = extractor(real, "real images") if real_features is None else _features(real_features, "real features")
    distance = kid(ref, fake, num_blocks=kid_blocks, seed=seed)
    precision, recall = precision_recall(ref, fake, k=k)
    return SampleQuality(fid=fid(ref, fake), kid=distance.value, kid_standard_error=distance.standard_error,
                         precision=precision, recall=recall, num_real=len(ref), num_generated=len(fake),
                         classifier=extractor.name, k=k)


def draw_samples(model, num_samples: int, seed: int = 0, batch_size: int = 500, prior=None, **sample_kwargs):
    """``num_samples`` images from ``model.sample`` in batches (a VQ-VAE's codes from ``prior``), as float32."""
    if not hasattr(model, "sample"):
        raise MetricsError(f"{type(model).__name__} cannot sample (no sample method).")
    if prior is not None:
        sample_kwargs["prior"] = prior
    import tensorflow as tf

    out = []
    for b, start in enumerate(range(0, num_samples, batch_size)):
        n = min(batch_size, num_samples - start)
        pair = tf.constant([seed, b], dtype=tf.int32)  # batch b of seed s: the stateless seed (s, b)
        out.append(np.asarray(model.sample(n, seed=pair, **sample_kwargs), np.float32))
    return np.clip(np.concatenate(out), 0.0, 1.0)


def model_sample_quality(model, real, num_samples: int = 10_000, classifier="mnist", seed: int = 0,
                         prior=None, **kwargs) -> SampleQuality:
    """:func:`sample_quality` of ``num_samples`` images drawn from ``model`` (the means of p(x|z) at prior codes,
    what ``model.sample`` returns) against ``real``."""
    generated = draw_samples(model, num_samples, seed=seed, prior=prior)
    return sample_quality(generated, real, classifier=classifier, seed=seed, **kwargs)


def describe(quality: SampleQuality | Mapping[str, Any]) -> str:
    """One line: ``FID 1.23  KID 0.0045 +- 0.0003  precision 0.91  recall 0.88``."""
    q = quality.as_dict() if isinstance(quality, SampleQuality) else dict(quality)
    return (f"FID {q['fid']:.3f}  KID {q['kid']:.5f} +- {q['kid_standard_error']:.5f}  "
            f"precision {q['precision']:.3f}  recall {q['recall']:.3f}")
