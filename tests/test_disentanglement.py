"""Disentanglement metrics on codes whose answer is known (vaezoo.disentanglement).

Four independent factors with 2, 3, 4 and 5 values; codes built from them:
identity (each factor in its own code dimension), a Hadamard mixture (every code an equal mix of every
factor: all information, none of it separated), pure noise, a duplicated factor, and an extra constant code.
"""

import numpy as np
import pytest

from vaezoo import disentanglement as D

SIZES = (2, 3, 4, 5)
N = 3000


def _factors(n=N, seed=0):
    rng = np.random.default_rng(seed)
    return np.stack([rng.integers(0, s, n) for s in SIZES], axis=1)


FACTORS = _factors()
Z = (FACTORS - FACTORS.mean(0)) / FACTORS.std(0)
HADAMARD = np.array([[1, 1, 1, 1], [1, -1, 1, -1], [1, 1, -1, -1], [1, -1, -1, 1]]) / 2.0
CODES = {
    "identity": Z,
    "mixed": Z @ HADAMARD,
    "noise": np.random.default_rng(1).normal(size=Z.shape),
    "duplicate": np.c_[Z[:, :1], Z],
    "constant": np.c_[Z, np.ones(N)],
}


@pytest.mark.parametrize("case, expected", [("identity", 1.0), ("mixed", 0.0), ("noise", 0.0),
                                            ("duplicate", 0.75), ("constant", 1.0)])
def test_mig(case, expected):
    # duplicate: factor 0 is in two codes (gap 0), the other three in one each: (0 + 1 + 1 + 1) / 4
    assert D.mig(CODES[case], FACTORS) == pytest.approx(expected, abs=0.02)


@pytest.mark.parametrize("case, expected", [("identity", 1.0), ("mixed", 0.0), ("noise", 0.0),
                                            ("duplicate", 0.75), ("constant", 1.0)])
def test_sap_continuous(case, expected):
    assert D.sap(CODES[case], FACTORS, continuous_factors=True) == pytest.approx(expected, abs=0.02)


def test_sap_discrete():
    # Binary factors: the right code predicts its factor perfectly, any other code at chance (1/2), so a
    # perfect code scores 1 - 1/2; a duplicated factor has a gap of 0: (0 + 1/2 + 1/2) / 3.
    binary = np.random.default_rng(2).integers(0, 2, size=(N, 3))
    assert D.sap(binary + 0.0, binary) == pytest.approx(0.5, abs=0.03)
    assert D.sap(np.c_[binary[:, :1], binary] + 0.0, binary) == pytest.approx(1 / 3, abs=0.03)
    assert D.sap(CODES["identity"], FACTORS) > 0.4  # many-valued factors: one linear code separates few classes
    assert D.sap(CODES["noise"], FACTORS) < 0.05 and D.sap(CODES["mixed"], FACTORS) < 0.05


@pytest.mark.parametrize("case", ["identity", "mixed", "noise", *(pytest.param(c, marks=pytest.mark.slow)
                                                                   for c in ("duplicate", "constant"))])
def test_dci(case):
    """Gradient-boosted trees take seconds per factor: two of the five cases run with the slow tests."""
    scores = D.dci(CODES[case][:240], FACTORS[:240])
    if case in ("identity", "constant"):
        assert scores["disentanglement"] > 0.98 and scores["completeness"] > 0.98
        assert scores["informativeness_test"] > 0.98
    elif case == "duplicate":  # each code about one factor; factor 0 spread over two codes
        assert scores["disentanglement"] > 0.98 and 0.5 < scores["completeness"] < 0.97
    elif case == "mixed":  # all the information, none of it separated
        assert scores["disentanglement"] < 0.05 and scores["completeness"] < 0.05
        assert scores["informativeness_test"] > 0.9
    else:  # noise: nothing to predict with
        assert scores["disentanglement"] < 0.1 and scores["informativeness_test"] < 0.45


def test_dci_in_parallel_threads_gives_the_same_scores():
    one = D.dci(CODES["duplicate"][:120], FACTORS[:120])
    assert D.dci(CODES["duplicate"][:120], FACTORS[:120], n_jobs=2) == one


def test_modularity():
    assert D.modularity(CODES["identity"], FACTORS) == pytest.approx(1.0, abs=0.01)
    assert D.modularity(CODES["duplicate"], FACTORS) == pytest.approx(1.0, abs=0.01)
    assert D.modularity(CODES["constant"], FACTORS) == pytest.approx(0.8, abs=0.01)  # a constant code scores 0
    assert D.modularity(CODES["mixed"], FACTORS) < 0.7


def test_information_helpers():
    labels = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    assert D.discrete_entropy(labels) == pytest.approx(np.log(4))
    assert D.discrete_mutual_info(labels, labels) == pytest.approx(np.log(4))
    assert D.discrete_mutual_info(labels, labels // 2) == pytest.approx(np.log(2))
    assert D.discrete_mutual_info(labels, np.zeros(8)) == 0.0
    bins = D.discretize(np.linspace(0, 1, 40)[:, None], num_bins=20)
    assert sorted(set(bins[:, 0])) == list(range(1, 21)) and np.all(np.diff(bins[:, 0]) >= 0)


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="same examples"):
        D.mig(Z[:10], FACTORS[:11])
    with pytest.raises(ValueError, match=r"\[N, d\]"):
        D.mig(Z[:, 0], FACTORS)
    with pytest.raises(ValueError, match="integer labels"):
        D.mig(Z, FACTORS + 0.5)
    with pytest.raises(ValueError, match="NaN"):
        D.mig(np.where(np.arange(N)[:, None] == 0, np.nan, Z), FACTORS)
    with pytest.raises(ValueError, match="constant"):
        D.mig(Z, np.zeros_like(FACTORS))
    with pytest.raises(ValueError, match="train_fraction"):
        D.sap(Z, FACTORS, train_fraction=1.0)


class _Identity:
    """Factors that are their own observations (disentanglement_lib's IdentityObservationsData)."""

    num_factors = len(SIZES)

    def sample_factors(self, n, rng):
        return np.stack([rng.integers(0, s, n) for s in SIZES], axis=1)

    def observations(self, factors, rng):
        return factors.astype(np.float64)


@pytest.mark.parametrize("score", [D.beta_vae_score, D.factor_vae_score])
def test_factor_conditioned_scores(score):
    sampler = _Identity()
    perfect = score(lambda x: x, sampler, num_train=300, num_eval=200)
    assert perfect["eval_accuracy"] > 0.95
    mixed = score(lambda x: (x - 2.0) @ HADAMARD + 0.5 * np.random.default_rng(0).normal(size=x.shape), sampler,
                  num_train=300, num_eval=200)
    assert mixed["eval_accuracy"] < perfect["eval_accuracy"] - 0.3


@pytest.mark.parametrize("score", [D.beta_vae_score, D.factor_vae_score])
def test_factor_conditioned_scores_are_stable_across_seeds(score):
    """A noisy but partly disentangled code: the score's spread over seeds stays within a few points."""
    sampler = _Identity()
    rng = np.random.default_rng(5)

    def encode(x):
        return x + rng.normal(scale=1.0, size=x.shape)

    values = [score(encode, sampler, num_train=300, num_eval=300, seed=s)["eval_accuracy"] for s in range(3)]
    assert 0.3 < np.mean(values) < 1.0 and np.std(values) < 0.05, values


def test_factor_vae_score_prunes_collapsed_dimensions():
    sampler = _Identity()
    result = D.factor_vae_score(lambda x: np.c_[x, np.zeros(len(x))], sampler, num_train=100, num_eval=50)
    assert result["num_active_dims"] == len(SIZES) and result["eval_accuracy"] > 0.95
    assert D.factor_vae_score(lambda x: np.zeros_like(x), sampler, num_train=10, num_eval=10)["eval_accuracy"] == 0.0


def test_array_metrics_are_stable_across_seeds():
    """MIG on three independent draws of the same kind of data agrees to within 0.02."""
    values = []
    for seed in range(3):
        factors = _factors(seed=seed + 10)
        codes = factors + 0.3 * np.random.default_rng(seed).normal(size=factors.shape)
        values.append(D.mig(codes, factors))
    assert np.ptp(values) < 0.02 and 0.3 < np.mean(values) < 1.0, values
