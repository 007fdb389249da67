"""Disentanglement metrics: MIG, SAP, DCI, modularity, the beta-VAE and FactorVAE scores.

The first four are functions of arrays, so they score any encoder: ``codes`` is ``[N, d]`` floats
(e.g. posterior means) and ``factors`` ``[N, k]`` integers (the ground-truth factor values of the same
N examples, e.g. :func:`vaezoo.data.sprites_arrays`). The last two need batches in which one factor is
held fixed: they take an ``encode`` function (images -> codes) and a :class:`FactorSampler`.

Definitions follow Locatello et al. 2019 and their disentanglement_lib, whose study settings are the
defaults here: codes discretised into 20 equal-width bins per dimension for the information-based
metrics; SAP on discrete factors with a linear SVM (C = 0.01) per (code, factor), scored on held-out
examples; DCI with gradient-boosted trees; batches of 64 for the beta-VAE and FactorVAE scores.
The functions that split their arrays into a training and a test part use the first
``train_fraction`` of a seeded permutation for training.

Example:

>>> import numpy as np
>>> from vaezoo import disentanglement
>>> factors = np.random.default_rng(0).integers(0, 5, size=(2000, 3))    # [N, k] factor values
>>> codes = factors + 0.1 * np.random.default_rng(1).normal(size=factors.shape)
>>> round(disentanglement.mig(codes, factors), 1)     # each factor in one code dimension
1.0
>>> codes = model.encode(images)[0]                   # doctest: +SKIP  (a vaezoo model's posterior means)

References:
    Locatello et al., "Challenging Common Assumptions in the Unsupervised Learning of Disentangled
    Representations", ICML 2019 (and google-research/disentanglement_lib).
"""

from __future__ import annotations

import importlib
from typing import Callable, Protocol

import numpy as np

#: Bins per code dimension for the information-based metrics (MIG, modularity), as in Locatello et al.
NUM_BINS = 20


class FactorSampler(Protocol):
    """Ground-truth data that can be drawn factor by factor (what the beta-VAE and FactorVAE scores need).

    ``sample_factors(n, rng)`` returns ``[n, k]`` integer factor values drawn from the data's
    distribution; ``observations(factors, rng)`` the images with those factors.
    """

    num_factors: int

    def sample_factors(self, n: int, rng: np.random.Generator) -> np.ndarray: ...

    def observations(self, factors: np.ndarray, rng: np.random.Generator) -> np.ndarray: ...


# ---- inputs and shared helpers -------------------------------------------------------------

def _check(codes, factors) -> tuple[np.ndarray, np.ndarray]:
    codes = np.asarray(codes, dtype=np.float64)
    factors = np.asarray(factors)
    if codes.ndim != 2 or factors.ndim != 2:
        raise ValueError(f"codes must be [N, d] and factors [N, k]; got shapes {codes.shape} and {factors.shape}.")
    if len(codes) != len(factors):
        raise ValueError(f"codes and factors must describe the same examples; got {len(codes)} codes and "
                         f"{len(factors)} factor rows.")
    if len(codes) < 2:
        raise ValueError(f"At least 2 examples are needed, got {len(codes)}.")
    if not np.issubdtype(factors.dtype, np.integer):
        if not np.all(np.equal(np.mod(factors, 1), 0)):
            raise ValueError("factors must be integer labels (discretise continuous factors first, e.g. "
                             "vaezoo.data.factor_labels).")
        factors = factors.astype(np.int64)
    if not np.isfinite(codes).all():
        raise ValueError("codes contain NaN or inf values.")
    return codes, factors


def discretize(codes, num_bins: int = NUM_BINS) -> np.ndarray:
    """Each code dimension cut into ``num_bins`` equal-width bins over its range: ``[N, d]`` ints."""
    codes = np.asarray(codes, dtype=np.float64)
    out = np.zeros(codes.shape, dtype=np.int64)
    for j in range(codes.shape[1]):
        edges = np.histogram(codes[:, j], num_bins)[1]
        out[:, j] = np.digitize(codes[:, j], edges[:-1])
    return out


def discrete_entropy(labels) -> float:
    """H(y) in nats of integer labels (their empirical distribution)."""
    _, counts = np.unique(np.asarray(labels), return_counts=True)
    p = counts / counts.sum()
    return float(-(p * np.log(p)).sum())


def discrete_mutual_info(a, b) -> float:
    """I(a; b) in nats of two integer label arrays (their empirical joint distribution)."""
    _, ia = np.unique(np.asarray(a), return_inverse=True)
    _, ib = np.unique(np.asarray(b), return_inverse=True)
    joint = np.zeros((ia.max() + 1, ib.max() + 1))
    np.add.at(joint, (ia, ib), 1.0)
    joint /= joint.sum()
    pa, pb = joint.sum(axis=1, keepdims=True), joint.sum(axis=0, keepdims=True)
    nz = joint > 0
    return float(max(0.0, (joint[nz] * np.log(joint[nz] / (pa @ pb)[nz])).sum()))


def mutual_info_matrix(codes, factors, num_bins: int = NUM_BINS) -> np.ndarray:
    """``[d, k]``: I(discretised code i; factor j) in nats."""
    codes, factors = _check(codes, factors)
    binned = discretize(codes, num_bins)
    return np.array([[discrete_mutual_info(binned[:, i], factors[:, j]) for j in range(factors.shape[1])]
                     for i in range(codes.shape[1])])


def _sklearn(module: str, name: str):
    """A scikit-learn class (SAP, DCI and the beta-VAE score fit classifiers), or a clear ImportError."""
    try:
        return getattr(importlib.import_module(f"sklearn.{module}"), name)
    except ImportError:
        raise ImportError("This metric fits scikit-learn classifiers: pip install 'vaezoo[metrics]' "
                          "(MIG, modularity and the FactorVAE score need only numpy).") from None


def _split(n: int, train_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    if not 0 < train_fraction < 1:
        raise ValueError(f"train_fraction must be in (0, 1), got {train_fraction}.")
    order = np.random.default_rng(seed).permutation(n)
    cut = int(round(n * train_fraction))
    if cut < 1 or cut >= n:
        raise ValueError(f"{n} examples leave no training or no test part at train_fraction={train_fraction}.")
    return order[:cut], order[cut:]


def _varying_factors(factors: np.ndarray) -> np.ndarray:
    varying = np.array([len(np.unique(factors[:, j])) > 1 for j in range(factors.shape[1])])
    if not varying.any():
        raise ValueError("Every factor is constant over these examples: there is nothing to disentangle.")
    return varying


# ---- metrics of arrays ---------------------------------------------------------------------

def mig(codes, factors, num_bins: int = NUM_BINS) -> float:
    """Mutual Information Gap (Chen et al. 2018), as in Locatello et al. 2019.

    For each factor v_k: the gap between the two largest I(z_j; v_k) over code dimensions, divided by
    H(v_k); averaged over factors. Codes are discretised into ``num_bins`` equal-width bins per
    dimension. 1: each factor is captured by one code dimension alone; 0: by none, or by two equally.
    Factors that do not vary over the examples are left out (H = 0).

    Reference: Chen, Li, Grosse & Duvenaud, "Isolating Sources of Disentanglement in Variational
    Autoencoders", NeurIPS 2018.
    """
    codes, factors = _check(codes, factors)
    if codes.shape[1] < 2:
        raise ValueError(f"MIG compares the two most informative code dimensions; codes have {codes.shape[1]}.")
    varying = _varying_factors(factors)
    m = mutual_info_matrix(codes, factors[:, varying], num_bins)
    entropy = np.array([discrete_entropy(factors[:, j]) for j in np.flatnonzero(varying)])
    top = np.sort(m, axis=0)[::-1]
    return float(np.mean((top[0] - top[1]) / entropy))


def sap(codes, factors, train_fraction: float = 2 / 3, seed: int = 0, continuous_factors: bool = False) -> float:
    """Separated Attribute Predictability (Kumar et al. 2018), as in Locatello et al. 2019.

    A score per (code dimension i, factor j): with discrete factors (the default, Locatello et al.'s
    setting) the test accuracy of a linear SVM (C = 0.01, balanced classes) predicting factor j from
    code i alone, trained on the first ``train_fraction`` of a seeded permutation of the examples;
    with ``continuous_factors=True`` the R^2 of a linear fit of factor j on code i (all examples).
    SAP is the mean over factors of the gap between the best and the second-best code dimension.
    A one-dimensional linear classifier separates few classes, so with many-valued discrete factors
    even a perfect code scores well below 1.

    Reference: Kumar, Sattigeri & Balakrishnan, "Variational Inference of Disentangled Latent Concepts
    from Unlabeled Observations", ICLR 2018.
    """
    LinearSVC = _sklearn("svm", "LinearSVC")
    codes, factors = _check(codes, factors)
    if codes.shape[1] < 2:
        raise ValueError(f"SAP compares the two most predictive code dimensions; codes have {codes.shape[1]}.")
    factors = factors[:, _varying_factors(factors)]
    scores = np.zeros((codes.shape[1], factors.shape[1]))
    if continuous_factors:
        for i in range(codes.shape[1]):
            for j in range(factors.shape[1]):
                cov = np.cov(codes[:, i], factors[:, j], ddof=1)
                scores[i, j] = cov[0, 1] ** 2 / (cov[0, 0] * cov[1, 1]) if cov[0, 0] > 1e-12 else 0.0
        top = np.sort(scores, axis=0)[::-1]
        return float(np.mean(top[0] - top[1]))
    train, test = _split(len(codes), train_fraction, seed)
    for i in range(codes.shape[1]):
        x_train, x_test = codes[train, i:i + 1], codes[test, i:i + 1]
        for j in range(factors.shape[1]):
            y_train, y_test = factors[train, j], factors[test, j]
            if len(np.unique(y_train)) < 2:
                continue
            classifier = LinearSVC(C=0.01, class_weight="balanced", random_state=seed).fit(x_train, y_train)
            scores[i, j] = np.mean(classifier.predict(x_test) == y_test)
    top = np.sort(scores, axis=0)[::-1]
    return float(np.mean(top[0] - top[1]))


def dci(codes, factors, train_fraction: float = 2 / 3, seed: int = 0, n_jobs: int | None = None) -> dict[str, float]:
    """Disentanglement, completeness and informativeness (Eastwood & Williams 2018), as in Locatello et al.

    One gradient-boosted-trees classifier per factor predicts it from all codes; the importance matrix
    R[i, j] is code i's feature importance for factor j. Disentanglement: 1 - H_k(R[i, :]) per code
    (entropy in base k over the factors), weighted by each code's share of the total importance;
    completeness: 1 - H_d(R[:, j]) per factor, weighted likewise; informativeness: the classifiers'
    accuracy on the training and on the held-out part. ``n_jobs`` fits the factors' classifiers in
    parallel threads (joblib's convention: None is one, -1 every core); the result does not depend on it.

    Reference: Eastwood & Williams, "A Framework for the Quantitative Evaluation of Disentangled
    Representations", ICLR 2018.
    """
    GradientBoostingClassifier = _sklearn("ensemble", "GradientBoostingClassifier")
    codes, factors = _check(codes, factors)
    factors = factors[:, _varying_factors(factors)]
    train, test = _split(len(codes), train_fraction, seed)
    k = factors.shape[1]
    joblib = importlib.import_module("joblib")  # scikit-learn's own dependency

    def fit(j):
        model = GradientBoostingClassifier(random_state=seed).fit(codes[train], factors[train, j])
        return (np.abs(model.feature_importances_), np.mean(model.predict(codes[train]) == factors[train, j]),
                np.mean(model.predict(codes[test]) == factors[test, j]))

    # the trees are grown in compiled code that releases the GIL, so threads run the factors in parallel
    fitted = joblib.Parallel(n_jobs=n_jobs, prefer="threads")(joblib.delayed(fit)(j) for j in range(k))
    importance = np.stack([f[0] for f in fitted], axis=1)  # [d, k]
    accuracy_train, accuracy_test = [f[1] for f in fitted], [f[2] for f in fitted]
    return {"disentanglement": _dci_disentanglement(importance), "completeness": _dci_completeness(importance),
            "informativeness_train": float(np.mean(accuracy_train)),
            "informativeness_test": float(np.mean(accuracy_test))}


def _entropy_rows(p: np.ndarray, base: int) -> np.ndarray:
    p = p + 1e-11
    p = p / p.sum(axis=1, keepdims=True)
    return -(p * np.log(p)).sum(axis=1) / np.log(base) if base > 1 else np.zeros(len(p))


def _dci_disentanglement(importance: np.ndarray) -> float:
    per_code = 1.0 - _entropy_rows(importance, importance.shape[1])
    weights = importance if importance.sum() > 0 else np.ones_like(importance)
    return float(np.sum(per_code * weights.sum(axis=1) / weights.sum()))


def _dci_completeness(importance: np.ndarray) -> float:
    return _dci_disentanglement(importance.T)


def modularity(codes, factors, num_bins: int = NUM_BINS) -> float:
    """Modularity (Ridgeway & Mozer 2018), as in Locatello et al. 2019.

    For each code dimension with mutual informations m_j = I(z; v_j) to the factors (codes discretised
    into ``num_bins`` bins): 1 - (sum_j m_j^2 - max_j m_j^2) / (max_j m_j^2 (k - 1)); 1 when the code
    carries information about one factor only. A code with no information about any factor scores 0.
    Averaged over code dimensions.

    Reference: Ridgeway & Mozer, "Learning Deep Disentangled Embeddings With the F-Statistic Loss",
    NeurIPS 2018.
    """
    codes, factors = _check(codes, factors)
    factors = factors[:, _varying_factors(factors)]
    if factors.shape[1] < 2:
        raise ValueError("Modularity compares a code's information about several factors; only one factor varies.")
    squared = np.square(mutual_info_matrix(codes, factors, num_bins))
    top = squared.max(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        score = 1.0 - (squared.sum(axis=1) - top) / (top * (squared.shape[1] - 1))
    score[top == 0] = 0.0
    return float(np.mean(score))


# ---- scores that draw factor-conditioned batches -------------------------------------------

def _encode(encode: Callable, images) -> np.ndarray:
    codes = encode(images)
    if isinstance(codes, (tuple, list)):  # a vaezoo model's encode: (mean, log_variance)
        codes = codes[0]
    return np.asarray(codes, dtype=np.float64)


#: Images encoded per call by the scores that draw batches (many points' batches at once).
ENCODE_CHUNK = 4096


def _chunks(labels: np.ndarray, batch_size: int):
    """``labels`` in runs of as many points as fit :data:`ENCODE_CHUNK` images."""
    step = max(1, ENCODE_CHUNK // batch_size)
    return (labels[i:i + step] for i in range(0, len(labels), step))


def _batches(sampler: FactorSampler, n: int, batch_size: int, rng) -> np.ndarray:
    """``n`` batches of factor vectors, ``[n, batch_size, num_factors]``."""
    return sampler.sample_factors(n * batch_size, rng).reshape(n, batch_size, -1)


def _encode_batches(encode: Callable, sampler: FactorSampler, factors: np.ndarray, rng) -> np.ndarray:
    """The codes of batches of factor vectors ``[n, b, k]`` -> ``[n, b, d]``, in one call of ``encode``."""
    n, b = factors.shape[:2]
    return _encode(encode, sampler.observations(factors.reshape(n * b, -1), rng)).reshape(n, b, -1)


def beta_vae_score(encode: Callable, sampler: FactorSampler, batch_size: int = 64, num_train: int = 10_000,
                   num_eval: int = 5_000, seed: int = 0) -> dict[str, float]:
    """The beta-VAE disentanglement score (Higgins et al. 2017), as in Locatello et al. 2019.

    Each point: pick a factor k at random, draw two batches of ``batch_size`` factor vectors that agree
    on factor k, encode their images, and take the mean absolute difference of the codes. A logistic
    regression predicts k from that vector; the score is its accuracy on ``num_eval`` fresh points.

    Reference: Higgins et al., "beta-VAE: Learning Basic Visual Concepts with a Constrained
    Variational Framework", ICLR 2017.
    """
    LogisticRegression = _sklearn("linear_model", "LogisticRegression")
    rng = np.random.default_rng(seed)

    def points(n):
        labels = rng.integers(0, sampler.num_factors, n)
        features = []
        for ks in _chunks(labels, batch_size):
            rows = np.arange(len(ks))
            first = _batches(sampler, len(ks), batch_size, rng)
            second = _batches(sampler, len(ks), batch_size, rng)
            second[rows, :, ks] = first[rows, :, ks]  # each pair of batches agrees on its factor k
            a, b = (_encode_batches(encode, sampler, f, rng) for f in (first, second))
            features.append(np.mean(np.abs(a - b), axis=1))
        return np.concatenate(features) if features else np.zeros((0, 0)), labels

    x_train, y_train = points(num_train)
    model = LogisticRegression(max_iter=1000).fit(x_train, y_train)
    x_eval, y_eval = points(num_eval)
    return {"train_accuracy": float(model.score(x_train, y_train)), "eval_accuracy": float(model.score(x_eval, y_eval))}


def factor_vae_score(encode: Callable, sampler: FactorSampler, batch_size: int = 64, num_train: int = 10_000,
                     num_eval: int = 5_000, num_variance_estimate: int = 10_000, prune_threshold: float = 0.05,
                     seed: int = 0) -> dict[str, float]:
    """The FactorVAE disentanglement score (Kim & Mnih 2018), as in Locatello et al. 2019.

    Codes are divided by their standard deviation over ``num_variance_estimate`` examples; dimensions
    whose standard deviation is below ``prune_threshold`` (collapsed to the prior) are left out. Each
    point: fix a random factor k over a batch of ``batch_size``, encode, and vote for the pair
    (k, the code dimension of least normalised variance). The classifier is the majority vote of each
    code dimension; the score is its accuracy on ``num_eval`` fresh points.

    Reference: Kim & Mnih, "Disentangling by Factorising", ICML 2018.
    """
    rng = np.random.default_rng(seed)
    reference = _encode(encode, sampler.observations(sampler.sample_factors(num_variance_estimate, rng), rng))
    variances = np.var(reference, axis=0, ddof=1)
    active = np.sqrt(variances) >= prune_threshold
    if not active.any():
        return {"train_accuracy": 0.0, "eval_accuracy": 0.0, "num_active_dims": 0}

    def votes(n):
        table = np.zeros((sampler.num_factors, len(variances)), dtype=np.int64)
        for ks in _chunks(rng.integers(0, sampler.num_factors, n), batch_size):
            rows = np.arange(len(ks))
            factors = _batches(sampler, len(ks), batch_size, rng)
            factors[rows, :, ks] = factors[rows, 0, ks][:, None]  # factor k fixed over each batch
            local = np.var(_encode_batches(encode, sampler, factors, rng), axis=1, ddof=1)
            dims = np.flatnonzero(active)[np.argmin(local[:, active] / variances[active], axis=1)]
            np.add.at(table, (ks, dims), 1)
        return table

    train = votes(num_train)
    classifier = np.argmax(train, axis=0)  # each code dimension votes for its most frequent factor
    columns = np.arange(train.shape[1])
    evaluation = votes(num_eval)
    return {"train_accuracy": float(train[classifier, columns].sum() / train.sum()),
            "eval_accuracy": float(evaluation[classifier, columns].sum() / evaluation.sum()),
            "num_active_dims": int(active.sum())}


#: The metrics of arrays by name (``vaezoo evaluate --metrics``).
ARRAY_METRICS = {"mig": mig, "sap": sap, "dci": dci, "modularity": modularity}
#: The metrics that draw factor-conditioned batches, by name.
SAMPLER_METRICS = {"beta_vae_score": beta_vae_score, "factor_vae_score": factor_vae_score}
METRICS = (*ARRAY_METRICS, *SAMPLER_METRICS)


def posterior_means(model, batch_size: int = 500) -> Callable[[np.ndarray], np.ndarray]:
    """The representation of a continuous-latent vaezoo model: images -> posterior means ``[N, d]``, in batches."""
    if not hasattr(model, "encode") or not hasattr(model, "latent_dim"):
        raise TypeError(f"Disentanglement metrics score continuous codes; {type(model).__name__} has none "
                        "(a VAE, BetaVAE or IWAE has).")

    def encode(images):
        images = np.asarray(images, dtype=np.float32)
        return np.concatenate([np.asarray(model.encode(images[i:i + batch_size])[0])
                               for i in range(0, len(images), batch_size)]) if len(images) else np.zeros((0, model.latent_dim))

    return encode


def evaluate(encode: Callable, data, metrics=("mig", "sap", "dci", "modularity"), num_examples: int = 10_000,
             seed: int = 0, num_train: int = 10_000, num_eval: int = 5_000, n_jobs: int | None = None) -> dict[str, float]:
    """Score a representation on data with known factors (e.g. :class:`vaezoo.data.SpriteGrid`).

    Args:
        encode: images -> codes ``[N, d]`` (e.g. :func:`posterior_means` of a model).
        data: a :class:`vaezoo.data.FactorData` (``sample_factors``, ``observations``, ``num_factors``).
        metrics: names from :data:`METRICS`.
        num_examples: examples drawn (seeded) for the metrics of arrays.
        num_train, num_eval: training and evaluation points (each a pair of batches of 64 examples) of
            the beta-VAE and FactorVAE scores (Locatello et al. 2019: 10,000 and 5,000).
        n_jobs: threads for DCI's classifiers (see :func:`dci`).

    Returns:
        ``{"mig": ..., "dci_disentanglement": ..., "factor_vae_score": ...}``: DCI gives its four parts,
        the beta-VAE and FactorVAE scores their evaluation accuracy.
    """
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise ValueError(f"Unknown metric {unknown[0]!r}; valid choices: {', '.join(METRICS)}.")
    out: dict[str, float] = {}
    if any(m in ARRAY_METRICS for m in metrics):
        rng = np.random.default_rng(seed)
        factors = data.sample_factors(num_examples, rng)
        codes = encode(data.observations(factors, rng))
        for name in (m for m in metrics if m in ARRAY_METRICS):
            value = ARRAY_METRICS[name](codes, factors, **({"n_jobs": n_jobs} if name == "dci" else {}))
            out.update({f"dci_{k}": v for k, v in value.items()} if isinstance(value, dict) else {name: value})
    for name in (m for m in metrics if m in SAMPLER_METRICS):
        out[name] = SAMPLER_METRICS[name](encode, data, num_train=num_train, num_eval=num_eval, seed=seed)["eval_accuracy"]
    return out
