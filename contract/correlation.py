"""SRCC, PLCC and KRCC: the correlations every IQA table reports, defined once for training,
export validation, the benchmarks and the demo (numpy only, so the runtime can use them).

- `srcc`: Spearman's rho, Pearson on ranks with ties given their average rank.
- `plcc`: plain Pearson on the raw scores, what IQA-PyTorch's training logs and the
  paper's tables use (docs/design.md sec. 5).
- `plcc_fit`: Pearson after the 4-parameter logistic mapping of VQEG,
  (beta1 - beta2) / (1 + exp(-(x - beta3) / |beta4|)) + beta2, fitted by least squares
  (needs scipy, which the full install has); if the fit fails it falls back to `plcc`.
- `krcc`: Kendall's tau-b (ties in either input accounted for).

Constant input, or fewer than two pairs: every correlation is 0.0. A constant ranking
carries no information; 0.0 (not NaN) keeps means over datasets and model selection
defined, and an INT8 graph that collapsed to one value still fails its fidelity gate.
"""
from __future__ import annotations

import warnings

import numpy as np


def _pairs(predicted, target) -> tuple[np.ndarray, np.ndarray]:
    predicted = np.asarray(predicted, dtype=np.float64).ravel()
    target = np.asarray(target, dtype=np.float64).ravel()
    if predicted.shape != target.shape:
        raise ValueError(f"{predicted.shape[0]} predictions for {target.shape[0]} targets")
    return predicted, target


def _degenerate(predicted: np.ndarray, target: np.ndarray) -> bool:
    return len(predicted) < 2 or np.ptp(predicted) == 0 or np.ptp(target) == 0


def rank(values) -> np.ndarray:
    """0-based ranks with ties given their average rank."""
    values = np.asarray(values, dtype=np.float64).ravel()
    order = np.argsort(values, kind="mergesort")
    ordered = values[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])     # first index of each run of ties
    ends = np.r_[starts[1:], len(values)] - 1
    ranks = np.empty(len(values), np.float64)
    ranks[order] = np.repeat((starts + ends) / 2.0, ends - starts + 1)
    return ranks


def plcc(predicted, target) -> float:
    predicted, target = _pairs(predicted, target)
    if _degenerate(predicted, target):
        return 0.0
    a, b = predicted - predicted.mean(), target - target.mean()
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


def srcc(predicted, target) -> float:
    predicted, target = _pairs(predicted, target)
    if _degenerate(predicted, target):
        return 0.0
    return plcc(rank(predicted), rank(target))


def krcc(predicted, target) -> float:
    """Kendall's tau-b, counted over all pairs in blocks (memory O(n x block))."""
    predicted, target = _pairs(predicted, target)
    if _degenerate(predicted, target):
        return 0.0
    concordance = ties_p = ties_t = 0.0
    block = max(1, 4_000_000 // len(predicted))
    for start in range(0, len(predicted), block):
        dp = np.sign(predicted[start:start + block, None] - predicted[None, :])
        dt = np.sign(target[start:start + block, None] - target[None, :])
        concordance += float((dp * dt).sum())
        ties_p += float((dp != 0).sum())
        ties_t += float((dt != 0).sum())
    return float(concordance / np.sqrt(ties_p * ties_t))      # ordered pairs: the factors of 2 cancel


def logistic4(x, beta1, beta2, beta3, beta4):
    return (beta1 - beta2) / (1 + np.exp(-(x - beta3) / np.abs(beta4))) + beta2


def plcc_fit(predicted, target) -> float:
    """Pearson after fitting the 4-parameter logistic from predictions to targets."""
    from scipy.optimize import curve_fit

    predicted, target = _pairs(predicted, target)
    if len(predicted) < 5 or _degenerate(predicted, target):
        return plcc(predicted, target)
    start = [target.max(), target.min(), float(np.mean(predicted)), float(np.std(predicted)) / 4 or 1e-3]
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            beta, _ = curve_fit(logistic4, predicted, target, p0=start, maxfev=20000)
            mapped = logistic4(predicted, *beta)
    except (RuntimeError, ValueError, FloatingPointError):
        return plcc(predicted, target)
    if not np.all(np.isfinite(mapped)):
        return plcc(predicted, target)
    return plcc(mapped, target)


def correlations(predicted, target) -> dict:
    """What an evaluation table reports: SRCC, PLCC raw and after the logistic fit, KRCC."""
    return {"srcc": srcc(predicted, target), "plcc": plcc(predicted, target),
            "plcc_fit": plcc_fit(predicted, target), "krcc": krcc(predicted, target)}
