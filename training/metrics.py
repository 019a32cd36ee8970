"""SRCC and PLCC, the two figures every IQA table reports.

PLCC is given twice (DESIGN.md sec. 5): `plcc` is plain Pearson on the raw
scores (what IQA-PyTorch's training logs and the paper's tables use), and
`plcc_fit` is Pearson after the 4-parameter logistic mapping of VQEG
(beta1 - beta2) / (1 + exp(-(x - beta3) / |beta4|)) + beta2, fitted by least
squares; if the fit does not converge, `plcc_fit` falls back to the raw value.
"""
from __future__ import annotations

import warnings

import numpy as np


def srcc(predicted, target) -> float:
    from scipy.stats import spearmanr

    predicted, target = _as_arrays(predicted, target)
    if len(predicted) < 2 or np.ptp(predicted) == 0 or np.ptp(target) == 0:
        return 0.0
    return float(spearmanr(predicted, target).statistic)


def plcc(predicted, target) -> float:
    predicted, target = _as_arrays(predicted, target)
    if len(predicted) < 2 or np.ptp(predicted) == 0 or np.ptp(target) == 0:
        return 0.0
    return float(np.corrcoef(predicted, target)[0, 1])


def logistic4(x, beta1, beta2, beta3, beta4):
    return (beta1 - beta2) / (1 + np.exp(-(x - beta3) / np.abs(beta4))) + beta2


def plcc_fit(predicted, target) -> float:
    """Pearson after fitting the 4-parameter logistic from predictions to targets."""
    from scipy.optimize import curve_fit

    predicted, target = _as_arrays(predicted, target)
    if len(predicted) < 5 or np.ptp(predicted) == 0 or np.ptp(target) == 0:
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
    return {"srcc": srcc(predicted, target), "plcc": plcc(predicted, target),
            "plcc_fit": plcc_fit(predicted, target)}


def _as_arrays(predicted, target):
    predicted = np.asarray(predicted, dtype=np.float64).ravel()
    target = np.asarray(target, dtype=np.float64).ravel()
    if predicted.shape != target.shape:
        raise ValueError(f"{predicted.shape[0]} predictions for {target.shape[0]} targets")
    return predicted, target
