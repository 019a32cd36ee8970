"""contract/correlation.py: the one definition of SRCC, PLCC and KRCC, checked against scipy."""
import numpy as np
import pytest
from scipy.stats import kendalltau, pearsonr, spearmanr

from contract.correlation import correlations, krcc, plcc, rank, srcc


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_against_scipy_with_ties(seed):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 6, 300).astype(float)              # many ties
    b = a + rng.normal(0, 2, 300)
    b[::7] = np.round(b[::7])
    assert srcc(a, b) == pytest.approx(spearmanr(a, b).statistic, abs=1e-12)
    assert plcc(a, b) == pytest.approx(pearsonr(a, b).statistic, abs=1e-12)
    assert krcc(a, b) == pytest.approx(kendalltau(a, b).statistic, abs=1e-12)   # tau-b


def test_ranks_average_ties():
    assert rank([3.0, 1.0, 3.0, 2.0]).tolist() == [2.5, 0.0, 2.5, 1.0]


def test_constant_input_is_zero_for_every_correlation():
    x = np.arange(10.0)
    for constant in (np.ones(10), [0.5] * 10):
        assert srcc(constant, x) == plcc(constant, x) == krcc(x, constant) == 0.0
        assert correlations(constant, x) == {"srcc": 0.0, "plcc": 0.0, "plcc_fit": 0.0, "krcc": 0.0}
    assert srcc([1.0], [2.0]) == 0.0
    with pytest.raises(ValueError, match="3 predictions for 2 targets"):
        srcc([1, 2, 3], [1, 2])
