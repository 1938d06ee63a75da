"""Fitting score calibrators (`ovdet.calibrators`: temperature, Platt, isotonic) to
true-positive flags. Fitting minimises the negative log-likelihood of the flags (temperature,
Platt) or the squared error under a monotonicity constraint (isotonic), with scipy.optimize.
"""

from __future__ import annotations

import numpy as np

from ..calibrators import METHODS, Calibrator, Isotonic, Platt, Temperature, logit, sigmoid


def _check(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    y = np.asarray(labels, dtype=np.float64).reshape(-1)
    if len(s) != len(y) or not len(s):
        raise ValueError(f"need equally many scores and labels (> 0), got {len(s)} and {len(y)}")
    return s, y


def _nll(z: np.ndarray, y: np.ndarray) -> float:
    """Mean binary cross-entropy of logits z against targets y in [0, 1] (stable form)."""
    return float(np.mean(np.logaddexp(0.0, z) - y * z))


def fit_temperature(scores: np.ndarray, labels: np.ndarray) -> Temperature:
    """T minimising the NLL of sigmoid(logit(s) / T), searched on log T in [-7, 7]."""
    from scipy.optimize import minimize_scalar

    s, y = _check(scores, labels)
    z = logit(s)
    res = minimize_scalar(lambda log_t: _nll(z * np.exp(-log_t), y), bounds=(-7.0, 7.0), method="bounded",
                          options={"xatol": 1e-6})
    return Temperature(float(np.exp(res.x)))


def fit_platt(scores: np.ndarray, labels: np.ndarray) -> Platt:
    """(a, b) minimising the NLL of sigmoid(a * logit(s) + b).

    Targets are Platt's smoothed ones, (N+ + 1) / (N+ + 2) and 1 / (N- + 2) instead of 1 and 0:
    with a few dozen examples (a rare class) and separable data the plain maximum-likelihood
    fit runs off to infinite slope; with thousands the smoothing changes nothing visible.
    """
    from scipy.optimize import minimize

    s, y = _check(scores, labels)
    z = logit(s)
    pos = y > 0.5
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    t = np.where(pos, (n_pos + 1.0) / (n_pos + 2.0), 1.0 / (n_neg + 2.0))

    def loss(params: np.ndarray) -> tuple[float, np.ndarray]:
        a, b = params
        u = a * z + b
        r = sigmoid(u) - t  # d NLL / d u
        return _nll(u, t), np.array([np.mean(r * z), np.mean(r)])

    def hessian(params: np.ndarray) -> np.ndarray:
        q = sigmoid(params[0] * z + params[1])
        w = q * (1.0 - q)
        return np.array([[np.mean(w * z * z), np.mean(w * z)], [np.mean(w * z), np.mean(w)]])

    # convex in (a, b) with an exact Hessian: a trust-region Newton method converges in a few
    # steps (L-BFGS-B took 10x longer per fit here, which counts with a fit per class and fold)
    res = minimize(loss, x0=np.array([1.0, 0.0]), jac=True, hess=hessian, method="trust-exact")
    return Platt(float(res.x[0]), float(res.x[1]))


def fit_isotonic(scores: np.ndarray, labels: np.ndarray) -> Isotonic:
    """Monotone least-squares fit (scipy's pool-adjacent-violators), kept as the end points of
    each constant block so that the file stays small and values between blocks interpolate."""
    from scipy.optimize import isotonic_regression

    s, y = _check(scores, labels)
    order = np.argsort(s, kind="stable")
    s, y = s[order], y[order]
    # equal scores are one point (weighted by their count): PAV must not order ties by label
    xs, start, counts = np.unique(s, return_index=True, return_counts=True)
    means = np.add.reduceat(y, start) / counts
    fitted = isotonic_regression(means, weights=counts.astype(np.float64), increasing=True).x
    keep = np.ones(len(xs), dtype=bool)
    if len(xs) > 2:  # interior points of a flat run add nothing to the interpolation
        same_prev = np.r_[False, fitted[1:] == fitted[:-1]]
        same_next = np.r_[fitted[:-1] == fitted[1:], False]
        keep = ~(same_prev & same_next)
    return Isotonic(tuple(xs[keep].tolist()), tuple(np.clip(fitted[keep], 0.0, 1.0).tolist()))


FITTERS = {"temperature": fit_temperature, "platt": fit_platt, "isotonic": fit_isotonic}


def fit(method: str, scores: np.ndarray, labels: np.ndarray) -> Calibrator:
    """Fit `method` ("temperature", "platt", "isotonic") to (N,) scores and (N,) 0/1 labels
    (1 = true positive)."""
    if method not in FITTERS:
        raise ValueError(f"unknown calibration method {method!r} (known: {', '.join(METHODS)})")
    return FITTERS[method](scores, labels)
